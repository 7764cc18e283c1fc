"""User accounts in Redis: username rules, registration, password checks.

Passwords are hashed with werkzeug (scrypt by default, pbkdf2 allowed); the
hash never leaves this module except into Redis. Usernames are unique
regardless of case (``Alice`` and ``alice`` are one name), but shown as typed.

Names are printable ASCII with single spaces inside: a rule a pattern states
exactly (the OpenAPI document carries it), with no Unicode look-alikes (a
Cyrillic "а" in "аdmin") and no normalisation that changes a name's length.
They may still hold quotes and angle brackets, so every page must escape
them, which Jinja's autoescaping does.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from . import atomic, keys
from .errors import ShopError
from .idempotency import IdempotencyClaim
from .shopstore import ShopStore

USERNAME_MIN, USERNAME_MAX = 3, 32
USERNAME_PATTERN = r"^[!-~]+( [!-~]+)*$"  # printable ASCII words, single spaces between
_USERNAME_RE = re.compile(USERNAME_PATTERN.removeprefix("^").removesuffix("$"))
PASSWORD_MIN, PASSWORD_MAX = 8, 128


@dataclass(frozen=True)
class User:
    id: str
    username: str


def normalize_username(value: Any) -> str:
    """Validate a new username (3 to 32 printable ASCII characters, single inner spaces)."""
    if not isinstance(value, str):
        raise ShopError(400, "bad_username", "username must be a string.")
    _check_length("username", value, USERNAME_MIN, USERNAME_MAX)
    if not _USERNAME_RE.fullmatch(value):
        raise ShopError(
            400,
            "bad_username",
            "username must be printable ASCII (letters, digits, punctuation), with single "
            "spaces between words and none at either end.",
        )
    return value


def fold(username: str) -> str:
    """The case-insensitive identity of a username (the uniqueness key)."""
    return username.casefold()


def check_password(value: Any) -> str:
    """Validate a new password's type and length."""
    if not isinstance(value, str):
        raise ShopError(400, "bad_password", "password must be a string.")
    _check_length("password", value, PASSWORD_MIN, PASSWORD_MAX)
    return value


def _check_length(field: str, value: str, low: int, high: int) -> None:
    if not low <= len(value) <= high:
        raise ShopError(400, f"bad_{field}", f"{field} must be {low} to {high} characters long.")


def register(
    store: ShopStore,
    username: str,
    password: str,
    *,
    hash_method: str = "scrypt",
    claim: IdempotencyClaim | None = None,
) -> atomic.Outcome:
    """Create a user (409 if the name is taken); result ``{user_id, username}``."""
    name = normalize_username(username)
    password = check_password(password)
    password_hash = generate_password_hash(password, method=hash_method)
    outcome = atomic.run(
        store,
        "register",
        [keys.users(), keys.users_by_name(), keys.users_next_id()],
        [fold(name), name, password_hash, datetime.now(UTC).isoformat()],
        claim,
    )
    if outcome.result.get("error") == "username_taken":
        raise ShopError(409, "username_taken", "That username is taken.")
    return outcome


@cache
def dummy_hash(hash_method: str) -> str:
    """A hash to verify when the username is unknown, made once per method.

    "No such user" then costs one password check, as "wrong password" does, so
    response times do not reveal which names exist. Made once: computing it on
    every call (as `dict.setdefault(k, generate(...))` would) doubles the cost.
    """
    return generate_password_hash(secrets.token_urlsafe(16), method=hash_method)


def authenticate(store: ShopStore, username: Any, password: Any, *, hash_method: str) -> User:
    """The user with these credentials, or a 401 that does not say which part was wrong."""
    denied = ShopError(401, "bad_credentials", "Wrong username or password.")
    if not isinstance(username, str) or not isinstance(password, str):
        raise ShopError(400, "bad_request", "username and password must be strings.")
    if len(password) > PASSWORD_MAX or len(username) > 4 * USERNAME_MAX:
        raise denied
    folded = fold(username)
    user_id = store.client.hget(keys.users_by_name(), folded)
    raw = store.client.hget(keys.users(), user_id) if user_id else None
    if raw is None:
        check_password_hash(dummy_hash(hash_method), password)
        raise denied
    record = json.loads(raw)
    if not check_password_hash(record["password_hash"], password):
        raise denied
    return User(id=record["id"], username=record["username"])
