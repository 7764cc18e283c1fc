"""Who is asking: the current request's user or anonymous visitor (from the
session), whose cart it works on, its idempotency scope, logging in and out.

Both the JSON API and the HTML pages go through these functions, so the rules
(session regenerated at login, anonymous cart merged, logout destroying the
session server-side, idempotency scoped per user or visitor) live once.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import current_app, request, session

from . import accounts, cart, csrf, idempotency, throttle
from .accounts import User
from .appstate import store
from .errors import ShopError
from .idempotency import IdempotencyClaim

USER_ID = "user_id"  # also sessionstore's user_key (its per-user index), set in create_app
USERNAME = "username"
VISITOR_ID = "visitor_id"  # an anonymous visitor's cart owner and idempotency scope


def current_user() -> User | None:
    """The logged-in user, from the session alone (no extra Redis call)."""
    user_id = session.get(USER_ID)
    if not user_id:
        return None
    return User(id=str(user_id), username=str(session.get(USERNAME, "")))


def require_user() -> User:
    """The logged-in user, or a 401."""
    user = current_user()
    if user is None:
        raise ShopError(401, "not_logged_in", "Please log in first.")
    return user


def _visitor_id(create: bool) -> str | None:
    visitor = session.get(VISITOR_ID)
    if visitor is None and create:
        visitor = secrets.token_urlsafe(16)
        session[VISITOR_ID] = visitor
    return visitor


def _visitor_lifetime() -> int:
    """The longest an anonymous visitor's session, and so its id, can live (seconds)."""
    return int(current_app.config["SESSION_ABSOLUTE_TIMEOUT"])


def _visitor_cart(visitor: str) -> cart.Owner:
    return cart.Owner.visitor(visitor, _visitor_lifetime())


def cart_owner(create: bool = False) -> cart.Owner | None:
    """Whose cart this request works on; an anonymous visitor gets an id when `create`."""
    user = current_user()
    if user is not None:
        return cart.Owner.user(user.id)
    visitor = _visitor_id(create)
    return _visitor_cart(visitor) if visitor else None


def claim(key: str | None, request_parts: list[Any]) -> IdempotencyClaim | None:
    """An idempotency claim for `key`, scoped to this user or (anonymous) visitor."""
    if key is None:
        return None
    user = current_user()
    scope = f"u:{user.id}" if user else f"a:{_visitor_id(create=True)}"
    # An anonymous visitor's records are unreachable once its session is gone.
    return _claim(scope, key, request_parts, user is not None)


def registration_claim(
    key: str | None, username: Any, request_parts: list[Any]
) -> IdempotencyClaim | None:
    """The claim of a registration through the API: scoped to the name asked for, not
    to the visitor. A registration is often a client's first request, before it has
    a session cookie, so the copy nginx resends to another replica (after a timeout
    on the first) comes as a new visitor: scoped to the visitor, it would find the
    name taken by its own first attempt and answer 409. The fingerprint, an HMAC of
    the whole body (password included), must still match to replay."""
    if key is None:
        return None
    name = accounts.fold(username) if isinstance(username, str) else ""
    return _claim(f"r:{name}", key, request_parts, True)


def _claim(scope: str, key: str, request_parts: list[Any], lasting: bool) -> IdempotencyClaim:
    return idempotency.make_claim(
        scope=scope,
        key=key,
        secret=current_app.secret_key or "",
        request_parts=[request.method, request.path, *request_parts],
        ttl_seconds=idempotency.RECORD_TTL_SECONDS if lasting else _visitor_lifetime(),
    )


def client_address() -> str:
    """The client's address (X-Forwarded-For is believed only from trusted proxies)."""
    return request.remote_addr or "unknown"


def log_in(username: Any, password: Any) -> User:
    """Check credentials under the login throttle, then start the user's session."""
    if not isinstance(username, str) or not isinstance(password, str):
        raise ShopError(400, "bad_request", "username and password must be strings.")
    config = current_app.config
    folded = accounts.fold(username)[: 4 * accounts.USERNAME_MAX]
    limits = throttle.Limits(
        per_user=config["LOGIN_MAX_PER_USER"],
        per_ip=config["LOGIN_MAX_PER_IP"],
        window_seconds=config["LOGIN_WINDOW"],
    )
    shop = store()
    address = client_address()
    throttle.count_attempt(shop, folded, address, limits)
    user = accounts.authenticate(
        shop, username, password, hash_method=config["PASSWORD_HASH_METHOD"]
    )
    throttle.clear_user(shop, folded, address)
    start_session(user)
    return user


def start_session(user: User) -> None:
    """Make `user` the session's user: merge the anonymous cart, then a new session id.

    The id is regenerated so that an id planted before login (session
    fixation) is worthless afterwards; so is the CSRF value, for the same reason.
    """
    visitor = session.pop(VISITOR_ID, None)
    if visitor:
        cart.merge(store(), _visitor_cart(visitor), cart.Owner.user(user.id))
    session.regenerate()
    session[USER_ID] = user.id
    session[USERNAME] = user.username
    csrf.rotate()


def log_out() -> None:
    """Delete the session from Redis now, so a replayed cookie is not logged in."""
    session.destroy()
