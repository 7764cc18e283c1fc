"""Log lines that can be followed across nginx, gunicorn and the app.

Two kinds of line, both on the replica's own output (the launcher keeps it in
``logs/shop-N.log``):

- one JSON object per request, the access line (:func:`access`), written by
  shop.metrics.RequestObserver: ``{"ts", "replica", "request_id", "method",
  "path", "status", "duration_ms"}``. ``request_id`` is nginx's X-Request-ID
  (or one the app made up), so a request can be traced from nginx's access log
  to the replica's. gunicorn's own access log is off by default so that this is
  the only one (see shop/gunicorn_conf.py).
- the app's warnings, text with the replica and request id in brackets.

What never goes into a line: the query string (a ``next=`` or any other value
a client put there), headers (cookies, Idempotency-Key), bodies (passwords,
CSRF tokens) and session ids. The access line takes only the method, the path
and the status, which is what makes that a property of this module rather than
of every call site.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from flask import current_app, g, has_app_context, has_request_context

FORMAT = "%(asctime)s %(levelname)s [%(replica)s %(request_id)s] %(name)s: %(message)s"
ACCESS_LOGGER = "shop.access"
MAX_PATH_LENGTH = 300  # a scanner's 8 kB path should not make an 8 kB log line

access_log = logging.getLogger(ACCESS_LOGGER)


class RequestContextFilter(logging.Filter):
    """Adds ``replica`` and ``request_id`` to every record ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.replica = current_app.config.get("REPLICA_NAME", "-") if has_app_context() else "-"
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def access_record(
    *, replica: str, request_id: str, method: str, path: str, status: int, seconds: float
) -> dict[str, object]:
    """The fields of one access line; `path` must be the path alone (no query string)."""
    return {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "replica": replica,
        "request_id": request_id,
        "method": method,
        "path": path.split("?", 1)[0][:MAX_PATH_LENGTH],
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
    }


def access(
    *, replica: str, request_id: str, method: str, path: str, status: int, seconds: float
) -> None:
    """Write one request's JSON access line."""
    if access_log.isEnabledFor(logging.INFO):
        record = access_record(
            replica=replica,
            request_id=request_id,
            method=method,
            path=path,
            status=status,
            seconds=seconds,
        )
        access_log.info(json.dumps(record, ensure_ascii=True, separators=(",", ":")))


def configure_logging(level: int = logging.INFO) -> None:
    """App warnings to stderr with replica and request id; access lines as bare JSON to stdout."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)

    access_handler = logging.StreamHandler(sys.stdout)
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.handlers[:] = [access_handler]
    access_log.propagate = False  # a JSON line, not wrapped in the text format
    access_log.setLevel(logging.INFO)
