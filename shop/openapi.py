"""The OpenAPI 3 description of the JSON API, served at /api/openapi.json.

A test checks that every /api route of the app is described here and every
path described here exists, so this document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from . import cart, idempotency
from .accounts import PASSWORD_MAX, PASSWORD_MIN, USERNAME_MAX, USERNAME_MIN


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A repeat with the same key returns the first result and changes nothing; "
    "the same key with a different body is a 422. Kept 24 hours.",
    "schema": {"type": "string", "minLength": 1, "maxLength": idempotency.MAX_KEY_LENGTH},
}
PRODUCT_ID = {"name": "product_id", "in": "path", "required": True, "schema": {"type": "string"}}

_NUMBER_OR_NULL = {"type": ["number", "null"]}
REPLICA = {
    "type": "object",
    "required": ["name", "alive", "workers", "requests_last_minute", "last_seen"],
    "properties": {
        "name": {"type": "string"},
        "alive": {"type": "boolean", "description": "a worker's heartbeat is fresh (< 3 s)"},
        "workers": {"type": "integer", "description": "gunicorn workers beating"},
        "pids": {"type": "array", "items": {"type": "integer"}},
        "started": _NUMBER_OR_NULL,
        "uptime_seconds": _NUMBER_OR_NULL,
        "requests_total": {"type": ["integer", "null"], "description": "null once gone"},
        "requests_last_minute": {"type": "integer"},
        "last_seen": {"type": "number", "description": "unix time of the last heartbeat"},
        "seconds_since_seen": {"type": "number"},
    },
}
CLUSTER = {
    "type": "object",
    "required": ["served_by", "alive", "replicas"],
    "properties": {
        "served_by": {"type": "string", "description": "the replica that answered this request"},
        "generated_at": {"type": "number"},
        "refresh_seconds": {"type": "number"},
        "alive": {"type": "integer"},
        "replicas": {"type": "array", "items": REPLICA},
    },
}

COMMON_ERRORS = {
    "503": _error("The store (Redis) is unreachable; retry after Retry-After seconds"),
}
BODY_ERRORS = {
    "400": _error("Malformed JSON or invalid fields"),
    "413": _error("Body too large"),
    "415": _error("Body is not application/json"),
}
IDEMPOTENT_ERRORS = {"422": _error("Idempotency-Key reused with a different request")}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    idempotent: bool = False,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, **COMMON_ERRORS}}
    parameters = list(params or [])
    if idempotent:
        parameters.append(IDEMPOTENCY_KEY)
        operation["responses"].update(IDEMPOTENT_ERRORS)
    if body is not None:
        operation["requestBody"] = _body(body)
        operation["responses"].update(BODY_ERRORS)
    if parameters:
        operation["parameters"] = parameters
    return operation


def _object(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
QTY = {"type": "integer", "minimum": 1, "maximum": cart.MAX_QTY}

SCHEMAS: dict[str, Any] = {
    "Error": _object(["error", "message"], error=STRING, message=STRING),
    "Credentials": _object(
        ["username", "password"],
        username={"type": "string", "minLength": USERNAME_MIN, "maxLength": USERNAME_MAX},
        password={"type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX},
    ),
    "User": _object(["username"], username=STRING),
    "Product": _object(
        ["id", "name", "price_cents", "stock"],
        id=STRING,
        name=STRING,
        description=STRING,
        price_cents=INTEGER,
        stock=INTEGER,
    ),
    "CartLine": _object(
        ["product_id", "name", "qty", "price_cents", "subtotal_cents"],
        product_id=STRING,
        name=STRING,
        qty=QTY,
        price_cents=INTEGER,
        subtotal_cents=INTEGER,
    ),
    "Cart": _object(
        ["items", "total_cents"],
        items={"type": "array", "items": _ref("CartLine")},
        total_cents=INTEGER,
    ),
    "LineChange": _object(["product_id", "qty"], product_id=STRING, qty=INTEGER),
    "Order": _object(
        ["order_id", "total_cents", "items"],
        order_id=INTEGER,
        created_at={"type": "string", "format": "date-time"},
        total_cents=INTEGER,
        items={"type": "array", "items": _ref("CartLine")},
    ),
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document."""
    no_content = {"description": "Done"}
    not_logged_in = _error("Not logged in")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Shop API",
            "version": "1.0.0",
            "description": "Every response carries X-Served-By: the replica that answered.",
        },
        "paths": {
            "/api/register": {
                "post": _op(
                    "Create a user",
                    {"201": _json(_ref("User"), "Created"), "409": _error("Username taken")},
                    body=_ref("Credentials"),
                    idempotent=True,
                )
            },
            "/api/login": {
                "post": _op(
                    "Log in (the session id is regenerated; an anonymous cart is merged)",
                    {
                        "200": _json(_ref("User"), "Logged in"),
                        "401": _error("Wrong username or password"),
                        "429": _error("Too many attempts; see Retry-After"),
                    },
                    body=_ref("Credentials"),
                )
            },
            "/api/logout": {
                "post": _op("Log out (the session is destroyed server-side)", {"204": no_content})
            },
            "/api/me": {
                "get": _op(
                    "Who is logged in",
                    {"200": _json(_ref("User"), "The user"), "401": not_logged_in},
                )
            },
            "/api/products": {
                "get": _op(
                    "The catalog with stock",
                    {"200": _json({"type": "array", "items": _ref("Product")}, "Products")},
                )
            },
            "/api/cart": {"get": _op("The cart", {"200": _json(_ref("Cart"), "The cart")})},
            "/api/cart/items": {
                "post": _op(
                    "Add qty of a product to the cart",
                    {
                        "201": _json(_ref("LineChange"), "The line's new qty"),
                        "404": _error("Unknown product"),
                    },
                    body=_object(["product_id", "qty"], product_id=STRING, qty=QTY),
                    idempotent=True,
                )
            },
            "/api/cart/items/{product_id}": {
                "put": _op(
                    "Set a line's qty (0 removes it)",
                    {
                        "200": _json(_ref("LineChange"), "The line's new qty"),
                        "404": _error("Unknown product"),
                    },
                    body=_object(["qty"], qty={**QTY, "minimum": 0}),
                    idempotent=True,
                    params=[PRODUCT_ID],
                ),
                "delete": _op(
                    "Remove a line",
                    {"204": no_content, "404": _error("Unknown product")},
                    idempotent=True,
                    params=[PRODUCT_ID],
                ),
            },
            "/api/checkout": {
                "post": _op(
                    "Place an order from the cart, all or nothing",
                    {
                        "201": _json(_ref("Order"), "The order"),
                        "400": _error("Empty cart"),
                        "401": not_logged_in,
                        "409": _error("Not enough stock; `short` names the lines"),
                    },
                    idempotent=True,
                )
            },
            "/api/orders": {
                "get": _op(
                    "The user's orders, newest first",
                    {
                        "200": _json({"type": "array", "items": _ref("Order")}, "Orders"),
                        "401": not_logged_in,
                    },
                )
            },
            "/api/cluster": {
                "get": _op(
                    "Every replica seen in the last 10 minutes, from their heartbeats",
                    {"200": _json(CLUSTER, "Who served this, and each replica alive or gone")},
                )
            },
            "/api/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}
            },
            "/healthz": {
                "get": {"summary": "The process runs", "responses": {"200": {"description": "OK"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Redis answers",
                    "responses": {"200": {"description": "Ready"}, **COMMON_ERRORS},
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }
