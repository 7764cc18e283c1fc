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


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a clear 4xx (415 not JSON, 400 malformed or not an object)."""
    if request.mimetype != "application/json":
        raise ShopError(415, "unsupported_media_type", "Send the body as application/json.")
    raw = request.get_data(cache=True)  # 413 beyond MAX_CONTENT_LENGTH
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ShopError(400, "malformed_json", "The body is not valid JSON.")
    if not isinstance(body, dict):
        raise ShopError(400, "bad_request", "The body must be a JSON object.")
    return body


def _claim(body: Any = None) -> IdempotencyClaim | None:
    return identity.claim(request.headers.get(idempotency.HEADER), [body])


def _hash_method() -> str:
    return current_app.config["PASSWORD_HASH_METHOD"]


def _no_content() -> Response:
    return Response(status=204)


@bp.post("/register")
def register():
    body = json_body()
    outcome = accounts.register(
        appstate.store(),
        body.get("username"),
        body.get("password"),
        hash_method=_hash_method(),
        claim=_claim(body),
    )
    return jsonify(outcome.result), 201


@bp.post("/login")
def login():
    body = json_body()
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
    body = json_body()
    product_id = cart.parse_product_id(body.get("product_id"))
    qty = cart.parse_qty(body.get("qty"))
    claim = _claim(body)
    owner = identity.cart_owner(create=True)
    outcome = cart.add(appstate.store(), owner, product_id, qty, claim)
    return jsonify(outcome.result), 201


@bp.put("/cart/items/<product_id>")
def set_item(product_id: str):
    body = json_body()
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
