"""Error handling and per-request plumbing shared by every blueprint.

One place turns every failure into the right answer: JSON
``{"error", "message"}`` under /api (and the health checks), a friendly HTML
page elsewhere, a 503 with Retry-After whenever Redis is unreachable (whether
that surfaced inside a view or while Flask saved the session afterwards), and
never a traceback. Every response, errors included, carries X-Served-By and
X-Request-ID.
"""

from __future__ import annotations

import logging
import re
import uuid

import redis
from flask import Flask, Response, current_app, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

from sessionstore import refused_for_replicas

from . import metrics
from .errors import STORE_ERRORS, ShopError, is_store_error, store_unavailable

log = logging.getLogger(__name__)

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
JSON_PATHS = ("/api/", "/healthz", "/readyz")
TITLES = {
    400: "That did not work",
    401: "Please log in",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed here",
    409: "Conflict",
    413: "That was too large",
    415: "Unsupported format",
    422: "Cannot repeat that",
    429: "Slow down",
    500: "Something went wrong",
    503: "Back in a moment",
}
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def wants_json() -> bool:
    return request.path.startswith(JSON_PATHS)


def error_response(err: ShopError) -> Response:
    """Render `err` as JSON or as the friendly HTML page."""
    if wants_json():
        response = jsonify(err.to_json())
    else:
        title = TITLES.get(err.status, "That did not work")
        response = Response(
            render_template("error.html", title=title, message=err.message, status=err.status)
        )
    response.status_code = err.status
    response.headers.update(err.headers())
    return response


def _store_down(exc: BaseException) -> Response:
    log.warning("store unavailable on %s %s: %s", request.method, request.path, exc)
    g.store_down = True  # the error page must not try Redis again
    metrics.record_store_unavailable()
    return error_response(store_unavailable())


def _redis_error(exc: redis.exceptions.ResponseError) -> Response:
    """A write the primary refused for want of replicas (min-replicas-to-write) is
    a 503 like any store outage; any other error reply is a bug and stays one."""
    if refused_for_replicas(exc):
        return _store_down(exc)
    raise exc


def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, InternalServerError):
        original = exc.original_exception
        if is_store_error(original):
            # Raised while the session was saved after the view: still a 503.
            return _store_down(original)
        return error_response(
            ShopError(500, "internal_error", "Something went wrong on our side; nothing was lost.")
        )
    status = exc.code or 500
    code = HTTP_CODES.get(status, "http_error")
    message = exc.description or TITLES.get(status, "")
    if status == 413:
        message = "The request body is too large."
    response = error_response(ShopError(status, code, message))
    if status == 405 and getattr(exc, "valid_methods", None):
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _begin_request() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
    # The metrics label: the route's name, never the raw path (bounded label values).
    request.environ[metrics.ENDPOINT_KEY] = request.endpoint or metrics.UNMATCHED


def _finish(response: Response) -> Response:
    response.headers["X-Served-By"] = current_app.config["REPLICA_NAME"]
    response.headers["X-Request-ID"] = g.get("request_id", "")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.endpoint != "static":
        # private: no shared cache may keep a shopper's page; no-cache: always
        # revalidated on a normal visit. Not no-store: a browser's Back then
        # shows the page as it was, with the same idempotency keys in its
        # forms, so "back, then submit again" is recognised as a repeat.
        response.headers.setdefault("Cache-Control", "private, no-cache")
    if response.mimetype == "text/html":
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def init_app(app: Flask) -> None:
    """Register the error handlers and request hooks on `app`."""
    app.register_error_handler(ShopError, error_response)
    for exc_type in STORE_ERRORS:
        app.register_error_handler(exc_type, _store_down)
    app.register_error_handler(redis.exceptions.ResponseError, _redis_error)
    app.register_error_handler(HTTPException, _http_error)
    app.before_request(_begin_request)
    app.after_request(_finish)
