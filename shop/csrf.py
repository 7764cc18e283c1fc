"""CSRF protection for the HTML forms that creates no session for a visitor who only looks.

A form's token is a signature (itsdangerous, keyed by SECRET_KEY) of a random
*raw* value, and a POST is accepted only if its token signs the raw value this
browser holds: Flask-WTF's scheme. What differs is where the raw value lives:

- in the session, once the visitor has one (a cart, a login): bound to that
  server-side session, as Flask-WTF binds it;
- before that, in a cookie of its own (``shop_csrf``: HttpOnly, SameSite=Lax,
  Secure like the session cookie, gone when the browser closes). Looking at
  pages then costs Redis nothing: Flask-WTF would have stored a session per
  cookieless visit, at a bot's pace. The cookie needs no signature of its own:
  the token is the signature, and only this server can make one.

An anonymous visitor's first write (say, an add to cart) makes a session; the
next page drawn moves the cookie's raw value into it, so pages open in other
tabs keep working (and a refused login, which stores nothing, still makes no
session). A logged-in session never adopts the cookie's value, and logging in
(or registering) draws a new raw value (:func:`rotate`, as Django does at
login): a value planted in the browser before login is worthless after it.

The JSON API is not checked here: it accepts only application/json, which a
cross-site HTML form cannot send, and refuses requests a browser marks
cross-site (shop/api.py).
"""

from __future__ import annotations

import hmac
import re
import secrets

from flask import Flask, Response, current_app, g, request, session
from itsdangerous import BadData, URLSafeSerializer

from .errors import ShopError

SESSION_KEY = "csrf"  # the raw value, once there is a session
COOKIE_NAME = "shop_csrf"  # the raw value, before there is one
FORM_FIELD = "csrf_token"
SALT = "shop-csrf-token"
CHECKED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNCHECKED_BLUEPRINTS = frozenset({"api"})
_RAW_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
_NO_COOKIE = object()  # g.csrf_cookie: delete the cookie
MESSAGE = (
    "This form has expired or did not come from this site. "
    "Nothing was changed: go back, reload the page and try again."
)


def _signer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key or "", salt=SALT)


def _new_raw() -> str:
    return secrets.token_urlsafe(32)


def _cookie_raw() -> str | None:
    value = request.cookies.get(COOKIE_NAME, "")
    return value if _RAW_SHAPE.fullmatch(value) else None


def _logged_in() -> bool:
    return bool(session.get("user_id"))


def _raw_for_form() -> str:
    """This browser's raw value, made (and put where it belongs) if it has none yet."""
    raw = session.get(SESSION_KEY)
    if raw:
        return raw
    if len(session):
        # A session exists (or this request is making one): bind the value to it.
        raw = (None if _logged_in() else _cookie_raw()) or _new_raw()
        session[SESSION_KEY] = raw
        return raw
    raw = _cookie_raw()
    if raw is None:
        raw = _new_raw()
        g.csrf_cookie = raw
    return raw


def _expected_raw() -> str | None:
    """The raw value a token must sign: the session's, else (anonymous) the cookie's."""
    raw = session.get(SESSION_KEY)
    if raw:
        return raw
    return None if _logged_in() else _cookie_raw()


def token() -> str:
    """The token for a form on this page (a template global: ``csrf_token()``)."""
    if "csrf_token" not in g:
        g.csrf_token = _signer().dumps(_raw_for_form())
    return g.csrf_token


def rotate() -> None:
    """A new raw value for a session whose privileges changed (login, registration)."""
    session[SESSION_KEY] = _new_raw()
    g.pop("csrf_token", None)
    if request.cookies.get(COOKIE_NAME):
        g.csrf_cookie = _NO_COOKIE


def _check() -> None:
    """Refuse (400) a form POST whose token does not sign this browser's raw value."""
    if request.method not in CHECKED_METHODS or request.blueprint in UNCHECKED_BLUEPRINTS:
        return
    if request.url_rule is None:
        return  # no such page, or not this method: routing answers (404, 405)
    if not current_app.config.get("CSRF_ENABLED", True):
        return
    refused = ShopError(400, "csrf_failed", MESSAGE)
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        raise refused
    expected = _expected_raw()
    try:
        signed = _signer().loads(request.form.get(FORM_FIELD, ""))
    except BadData:
        raise refused from None
    if not expected or not isinstance(signed, str) or not hmac.compare_digest(signed, expected):
        raise refused


def _set_cookie(response: Response) -> Response:
    value = g.pop("csrf_cookie", None)
    if value is _NO_COOKIE:
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Lax")
    elif value is not None:
        response.set_cookie(
            COOKIE_NAME,
            value,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=current_app.config["SESSION_COOKIE_SECURE"],
        )
    return response


def init_app(app: Flask) -> None:
    """Check every form POST; give templates ``csrf_token()``; set the cookie when made."""
    app.before_request(_check)
    app.after_request(_set_cookie)
    app.add_template_global(token, "csrf_token")
