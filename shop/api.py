"""The JSON API under /api, as the README's API table (and /api/openapi.json) fixes it.

Bodies must be ``application/json`` (415 otherwise), which is what keeps a
cross-site HTML form from reaching these endpoints, so CSRF tokens are not
needed here. Errors are ``{"error": code, "message": text}`` (see handlers.py).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from . import accounts, appstate, cart, catalog, idempotency, identity, orders
from .errors import ShopError
from .idempotency import IdempotencyClaim
from .openapi import document

bp = Blueprint("api", __name__, url_prefix="/api")

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@bp.before_request
def only_json_and_same_site() -> None:
    """Refuse non-JSON bodies (415) and requests a browser marks as cross-site (403)."""
    if request.method not in MUTATING:
        return
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        raise ShopError(403, "cross_site", "Cross-site requests are not accepted.")
    has_body = bool(request.content_length) or "Content-Type" in request.headers
    if has_body and request.mimetype != "application/json":
        raise ShopError(415, "unsupported_media_type", "Send the body as application/json.")


# Every body of this API is one flat object; a deeper nesting is refused before
# parsing, since Python's json recurses once per level (1,000 levels of "["
# in 2 KB would be a RecursionError, a 500).
MAX_JSON_DEPTH = 16


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether JSON `text` opens more than `limit` arrays/objects inside each other.

    A linear scan that skips strings; it runs only when the text holds more
    than `limit` brackets at all, so ordinary bodies cost two str.count calls.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _not_json(constant: str) -> Any:
    """NaN and Infinity: Python's json reads them, JSON has no such thing."""
    raise ValueError(f"{constant} is not JSON")


def json_body(*fields: str) -> dict[str, Any]:
    """The request's JSON object, with no member but `fields`, or a clear 4xx.

    415 not JSON; 413 too large; 400 malformed, nested too deep, not an
    object, or with a member this endpoint does not take (the OpenAPI document
    says ``additionalProperties: false``).
    """
    if request.mimetype != "application/json":
        raise ShopError(415, "unsupported_media_type", "Send the body as application/json.")
    raw = request.get_data(cache=True)  # 413 beyond MAX_CONTENT_LENGTH
    try:
        text = raw.decode("utf-8")
        if nesting_exceeds(text, MAX_JSON_DEPTH):
            raise ShopError(
                400, "malformed_json", f"The body nests more than {MAX_JSON_DEPTH} levels deep."
            )
        body = json.loads(text, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError):
        raise ShopError(400, "malformed_json", "The body is not valid JSON.")
    if not isinstance(body, dict):
        raise ShopError(400, "bad_request", "The body must be a JSON object.")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ShopError(
            400,
            "unknown_field",
            f"This endpoint takes only {', '.join(fields)}; not {', '.join(unknown)}.",
        )
    return body


def _claim(body: Any = None) -> IdempotencyClaim | None:
    return identity.claim(request.headers.get(idempotency.HEADER), [body])


def _hash_method() -> str:
    return current_app.config["PASSWORD_HASH_METHOD"]


def _no_content() -> Response:
    return Response(status=204)


@bp.post("/register")
def register():
    body = json_body("username", "password")
    outcome = accounts.register(
        appstate.store(),
        body.get("username"),
        body.get("password"),
        hash_method=_hash_method(),
        claim=identity.registration_claim(
            request.headers.get(idempotency.HEADER), body.get("username"), [body]
        ),
    )
    return jsonify(outcome.result), 201


@bp.post("/login")
def login():
    body = json_body("username", "password")
    user = identity.log_in(body.get("username"), body.get("password"))
    return jsonify({"username": user.username})


@bp.post("/logout")
def logout():
    identity.log_out()
    return _no_content()


@bp.get("/me")
def me():
    user = identity.require_user()
    return jsonify({"username": user.username})


@bp.get("/products")
def products():
    return jsonify([p.to_api() for p in catalog.list_products(appstate.store())])


@bp.get("/cart")
def get_cart():
    owner = identity.cart_owner(create=False)
    if owner is None:
        return jsonify(cart.Cart([]).to_api())
    return jsonify(cart.get(appstate.store(), owner).to_api())


@bp.post("/cart/items")
def add_item():
    body = json_body("product_id", "qty")
    product_id = cart.parse_product_id(body.get("product_id"))
    qty = cart.parse_qty(body.get("qty"))
    claim = _claim(body)
    owner = identity.cart_owner(create=True)
    outcome = cart.add(appstate.store(), owner, product_id, qty, claim)
    return jsonify(outcome.result), 201


@bp.put("/cart/items/<product_id>")
def set_item(product_id: str):
    body = json_body("qty")
    product_id = cart.parse_product_id(product_id)
    qty = cart.parse_qty(body.get("qty"), allow_zero=True)
    claim = _claim(body)
    owner = identity.cart_owner(create=True)
    outcome = cart.set_qty(appstate.store(), owner, product_id, qty, claim)
    return jsonify(outcome.result)


@bp.delete("/cart/items/<product_id>")
def remove_item(product_id: str):
    product_id = cart.parse_product_id(product_id)
    claim = _claim()
    owner = identity.cart_owner(create=True)
    cart.set_qty(appstate.store(), owner, product_id, 0, claim)
    return _no_content()


@bp.post("/checkout")
def checkout():
    user = identity.require_user()
    outcome = orders.checkout(appstate.store(), user.id, _claim())
    return jsonify(orders.public_order(outcome.result)), 201


@bp.get("/orders")
def list_orders():
    user = identity.require_user()
    return jsonify(orders.history(appstate.store(), user.id))


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())
