"""The OpenAPI 3 description of the JSON API, served at /api/openapi.json.

It says exactly what the server does, no more and no less, so that a fuzzer
reading it (tests/test_api_fuzz.py runs schemathesis with every check) finds
nothing to report: every input rule is a pattern, a length or a range taken
from the code that enforces it; no body takes a member it does not name
(``additionalProperties: false``); every status an operation can answer is
listed, and every answer's shape. A test also checks that every /api route of
the app is described here and every path described here exists.

What each status means, for every operation alike:

- 400 the request itself is malformed (bad JSON, a field out of its rules, an
  unknown member, a bad Idempotency-Key), whatever the state of the shop;
- 409 the request is well formed but the state forbids it now (name taken,
  cart full or its line at the limit, cart empty, stock short);
- 401 not logged in; 403 a browser marked the request cross-site; 404 no such
  product; 413 body over 16 KB; 415 a body that is not application/json;
  422 an Idempotency-Key reused for another request; 429 login throttled;
  503 the store (Redis) is unreachable. 429 and 503 carry Retry-After.
"""

from __future__ import annotations

from typing import Any

from . import accounts, cart, idempotency
from .accounts import PASSWORD_MAX, PASSWORD_MIN, USERNAME_MAX, USERNAME_MIN


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], optional: dict[str, Any] | None = None, **properties: Any):
    """A JSON object with exactly these members (`required`, plus `optional` ones)."""
    return {
        "type": "object",
        "required": required,
        "properties": {**properties, **(optional or {})},
        "additionalProperties": False,
    }


STATUS_MEANINGS = (
    "Every response carries X-Served-By: the replica that answered. 400: the request itself "
    "is malformed, whatever the state of the shop. 409: well formed, but the state forbids "
    "it now. 401 not logged in; 403 marked cross-site by the browser; 404 no such product; "
    "413 body over 16 KB; 415 a body that is not application/json; 422 an Idempotency-Key "
    "reused for another request; 429 login throttled; 503 the store is unreachable. 429 "
    "and 503 carry Retry-After."
)
STRING = {"type": "string"}
INTEGER = {"type": "integer"}
CENTS = {"type": "integer", "minimum": 0}
QTY = {"type": "integer", "minimum": 1, "maximum": cart.MAX_QTY}
PRODUCT_ID_SCHEMA = {"type": "string", "pattern": cart.PRODUCT_ID_RE.pattern}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "required": True,
        "schema": {"type": "string", "pattern": r"^[1-9][0-9]*$"},
    }
}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    extra = {"headers": RETRY_AFTER} if retry_after else {}
    return _json(_ref("Error"), description, **extra)


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


IDEMPOTENCY_KEY = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "description": "A repeat with the same key returns the first result and changes nothing; "
    "the same key with a different request is a 422. Kept 24 hours (an anonymous visitor's: "
    "as long as its session can live). Printable ASCII; HTTP strips spaces at either end.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": idempotency.KEY_PATTERN,
    },
}
PRODUCT_ID = {"name": "product_id", "in": "path", "required": True, "schema": PRODUCT_ID_SCHEMA}
SESSION = [{"session": []}]

STORE_DOWN = {"503": _error("The store (Redis) is unreachable", retry_after=True)}
# Every POST, PUT and DELETE: shop/api.py refuses these before anything else.
MUTATING = {
    "403": _error("A browser marked the request cross-site (Sec-Fetch-Site)"),
    "415": _error("A body that is not application/json"),
}
WITH_BODY = {
    "400": _error("Malformed JSON, a field outside its rules, or a member not listed"),
    "413": _error("Body over 16 KB"),
}
IDEMPOTENT = {
    "400": _error("A malformed Idempotency-Key, or (with a body) malformed JSON, a field "
                  "outside its rules, or a member not listed"),
    "422": _error("Idempotency-Key reused with a different request"),
}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    idempotent: bool = False,
    mutating: bool = False,
    params: list[dict[str, Any]] | None = None,
    logged_in: bool = False,
) -> dict[str, Any]:
    """One operation with every status it can answer: its own, then the shared ones."""
    answers = {**responses, **STORE_DOWN}
    parameters = list(params or [])
    if mutating or body is not None or idempotent:
        answers.update(MUTATING)
    operation: dict[str, Any] = {"summary": summary}
    if body is not None:
        operation["requestBody"] = _body(body)
        answers.update(WITH_BODY)
    if idempotent:
        parameters.append(IDEMPOTENCY_KEY)
        answers.update(IDEMPOTENT)
    if parameters:
        operation["parameters"] = parameters
    if logged_in:
        operation["security"] = SESSION
    operation["responses"] = dict(sorted(answers.items()))
    return operation


REPLICA = _object(
    ["name", "alive"],
    optional={
        "workers": {"type": "integer", "description": "gunicorn workers beating"},
        "pids": {"type": "array", "items": INTEGER},
        "started": {"type": ["number", "null"]},
        "uptime_seconds": {"type": ["number", "null"]},
        "requests_total": {"type": ["integer", "null"], "description": "null once gone"},
        "requests_last_minute": INTEGER,
        "last_seen": {"type": "number", "description": "unix time of the last heartbeat"},
        "seconds_since_seen": {"type": "number"},
    },
    name=STRING,
    alive={"type": "boolean", "description": "a worker's heartbeat is fresh (< 3 s)"},
)
NUMBER_OR_NULL = {"type": ["number", "null"]}
AUTOSCALE_POLICY = _object(
    ["minimum", "maximum", "target", "window", "down_window", "cooldown", "band"],
    minimum=INTEGER,
    maximum=INTEGER,
    target={"type": "number", "description": "requests in flight per replica aimed for"},
    window={"type": "number", "description": "seconds averaged into one reading"},
    down_window={"type": "number", "description": "seconds of calm before a scale-down"},
    cooldown={"type": "number", "description": "seconds after a change before a scale-down"},
    band={"type": "number", "description": "a scale-down leaves each replica <= band x target"},
)
AUTOSCALE_READING = _object(
    ["pid", "updated", "policy", "replicas", "in_flight", "per_replica", "outlook", "summary"],
    pid=INTEGER,
    updated={"type": "number", "description": "unix time"},
    policy=AUTOSCALE_POLICY,
    replicas=INTEGER,
    in_flight={**NUMBER_OR_NULL, "description": "requests in flight through nginx, 3-s mean"},
    per_replica=NUMBER_OR_NULL,
    outlook={"type": "string", "description": "what it waits for"},
    summary=STRING,
)
AUTOSCALE_DECISION = _object(
    ["at", "action", "reason", "summary"],
    optional={
        "from": INTEGER,
        "to": INTEGER,
        "in_flight": NUMBER_OR_NULL,
        "took": {"type": "number", "description": "seconds the scale took"},
    },
    at={"type": "number", "description": "unix time"},
    action={"enum": ["on", "up", "down", "error", "off"]},
    reason=STRING,
    summary=STRING,
)
AUTOSCALE = {
    "anyOf": [
        {"type": "null"},
        _object(
            ["reading", "decisions"],
            reading={"anyOf": [{"type": "null"}, AUTOSCALE_READING]},
            decisions={"type": "array", "items": AUTOSCALE_DECISION},
        ),
    ],
    "description": "the launcher's autoscaler (`shop-cluster autoscale`): what it reads now "
    "(null when it is off) and its latest decisions, newest first; null for a client that "
    "sees no details (it tells the load)",
}
COUNT = {"type": "integer", "minimum": 0}
REPLICA_LINK = _object(
    ["host", "port", "address", "state", "lag_seconds", "behind_bytes", "in_sync"],
    host=STRING,
    port=INTEGER,
    address={"type": "string", "description": "host:port, as the primary sees the replica"},
    state={"type": "string", "description": "online once synced; wait_bgsave, send_bulk... before"},
    lag_seconds={**COUNT, "description": "since its last acknowledgement (sent every second)"},
    behind_bytes={**COUNT, "description": "of the replication stream not yet acknowledged"},
    in_sync={"type": "boolean", "description": "online and acknowledged within 3 s"},
)
STORE = _object(
    ["address", "role", "offset", "replicas_in_sync", "replicas", "writes_need", "writes_accepted"],
    address={"type": "string", "description": "host:port of the Redis node taking writes now"},
    role={"type": "string", "enum": ["primary", "replica"]},
    offset=COUNT,
    replicas_in_sync=COUNT,
    replicas={"type": "array", "items": REPLICA_LINK},
    writes_need={**COUNT, "description": "replicas a write must reach (SHOP_REPLICA_ACKS)"},
    writes_accepted={
        "type": "boolean",
        "description": "false while fewer replicas are in sync than a write needs: writes get 503",
    },
)
CLUSTER = _object(
    ["served_by", "generated_at", "refresh_seconds", "alive", "replicas", "details", "autoscale"],
    optional={"store": {**STORE, "description": "with the details only: the Redis nodes"}},
    served_by={"type": "string", "description": "the replica that answered this request"},
    generated_at={"type": "number"},
    refresh_seconds={"type": "number"},
    alive={"type": "integer", "minimum": 0},
    details={
        "type": "boolean",
        "description": "whether the replicas carry their process details (pids, uptime, "
        "request counts): only for a client on this host, or with SHOP_CLUSTER_DETAILS=1",
    },
    replicas={"type": "array", "items": REPLICA},
    autoscale=AUTOSCALE,
)

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        ["error", "message"],
        optional={"short": {"type": "array", "items": _ref("ShortLine")}},
        error=STRING,
        message=STRING,
    ),
    "ShortLine": _object(
        ["product_id", "name", "requested", "available"],
        product_id=STRING,
        name=STRING,
        requested=QTY,
        available=INTEGER,
    ),
    "NewAccount": _object(
        ["username", "password"],
        username={
            "type": "string",
            "minLength": USERNAME_MIN,
            "maxLength": USERNAME_MAX,
            "pattern": accounts.USERNAME_PATTERN,
            "description": "printable ASCII, single spaces inside; unique whatever the case",
        },
        password={"type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX},
    ),
    "Credentials": _object(
        ["username", "password"],
        username={"type": "string", "description": "any string; a wrong one is a 401"},
        password=STRING,
    ),
    "User": _object(["username"], username=STRING),
    "Registered": _object(
        ["user_id", "username"], user_id={"type": "string", "pattern": "^[1-9][0-9]*$"},
        username=STRING,
    ),
    "Product": _object(
        ["id", "name", "description", "price_cents", "stock"],
        id=PRODUCT_ID_SCHEMA,
        name=STRING,
        description=STRING,
        price_cents=CENTS,
        stock=INTEGER,
    ),
    "CartLine": _object(
        ["product_id", "name", "qty", "price_cents", "subtotal_cents"],
        product_id=STRING,
        name=STRING,
        qty=QTY,
        price_cents=CENTS,
        subtotal_cents=CENTS,
    ),
    "Cart": _object(
        ["items", "total_cents"],
        items={"type": "array", "items": _ref("CartLine")},
        total_cents=CENTS,
    ),
    "NewLine": _object(["product_id", "qty"], product_id=PRODUCT_ID_SCHEMA, qty=QTY),
    "LineQty": _object(["qty"], qty={**QTY, "minimum": 0}),
    "LineChange": _object(
        ["product_id", "qty"], product_id=STRING, qty={**QTY, "minimum": 0}
    ),
    "Order": _object(
        ["order_id", "created_at", "total_cents", "items"],
        order_id=INTEGER,
        created_at={"type": "string", "format": "date-time"},
        total_cents=CENTS,
        items={"type": "array", "minItems": 1, "items": _ref("CartLine")},
    ),
    "Health": _object(["status", "replica"], status={"enum": ["ok"]}, replica=STRING),
    "Ready": _object(["status", "replica"], status={"enum": ["ready"]}, replica=STRING),
    "Cluster": CLUSTER,
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    done = {"description": "Done"}
    not_logged_in = _error("Not logged in")
    unknown_product = _error("No such product")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Shop API",
            "version": "2.0.0",
            "description": STATUS_MEANINGS,
        },
        "paths": {
            "/api/register": {
                "post": _op(
                    "Create a user",
                    {
                        "201": _json(_ref("Registered"), "Created"),
                        "409": _error("Username taken"),
                    },
                    body=_ref("NewAccount"),
                    idempotent=True,
                )
            },
            "/api/login": {
                "post": _op(
                    "Log in (the session id is regenerated; an anonymous cart is merged)",
                    {
                        "200": _json(_ref("User"), "Logged in"),
                        "401": _error("Wrong username or password"),
                        "429": _error("Too many attempts", retry_after=True),
                    },
                    body=_ref("Credentials"),
                )
            },
            "/api/logout": {
                "post": _op(
                    "Log out (the session is destroyed server-side)",
                    {"204": done},
                    mutating=True,
                )
            },
            "/api/me": {
                "get": _op(
                    "Who is logged in",
                    {"200": _json(_ref("User"), "The user"), "401": not_logged_in},
                    logged_in=True,
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
                        "404": unknown_product,
                        "409": _error("The cart is full, or the line would pass 99"),
                    },
                    body=_ref("NewLine"),
                    idempotent=True,
                )
            },
            "/api/cart/items/{product_id}": {
                "put": _op(
                    "Set a line's qty (0 removes it)",
                    {
                        "200": _json(_ref("LineChange"), "The line's new qty"),
                        "404": unknown_product,
                        "409": _error("The cart is full (a new line)"),
                    },
                    body=_ref("LineQty"),
                    idempotent=True,
                    params=[PRODUCT_ID],
                ),
                "delete": _op(
                    "Remove a line",
                    {"204": done, "404": unknown_product},
                    idempotent=True,
                    params=[PRODUCT_ID],
                ),
            },
            "/api/checkout": {
                "post": _op(
                    "Place an order from the cart, all or nothing",
                    {
                        "201": _json(_ref("Order"), "The order"),
                        "401": not_logged_in,
                        "409": _error("The cart is empty, or stock is short (`short` names "
                                      "the lines)"),
                    },
                    idempotent=True,
                    logged_in=True,
                )
            },
            "/api/orders": {
                "get": _op(
                    "The user's orders, newest first",
                    {
                        "200": _json({"type": "array", "items": _ref("Order")}, "Orders"),
                        "401": not_logged_in,
                    },
                    logged_in=True,
                )
            },
            "/api/cluster": {
                "get": _op(
                    "Every replica seen in the last 10 minutes, from their heartbeats, "
                    "and the autoscaler's decisions",
                    {"200": _json(_ref("Cluster"), "Who served this; each replica alive or gone")},
                )
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "This document")},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process runs",
                    "responses": {"200": _json(_ref("Health"), "Running")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Redis answers",
                    "responses": {"200": _json(_ref("Ready"), "Ready"), **STORE_DOWN},
                }
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "session",
                    "description": "The session cookie that /api/login (or /api/register "
                    "through the HTML form) sets",
                }
            },
        },
    }
