"""Log lines that can be followed across nginx, gunicorn and the app.

Every record gets the replica name and the request id (nginx's X-Request-ID,
or one the app made up), so one request can be traced through the access log
of nginx, gunicorn's access log and the app's own warnings.
"""

from __future__ import annotations

import logging

from flask import current_app, g, has_app_context, has_request_context

FORMAT = "%(asctime)s %(levelname)s [%(replica)s %(request_id)s] %(name)s: %(message)s"


class RequestContextFilter(logging.Filter):
    """Adds ``replica`` and ``request_id`` to every record ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.replica = current_app.config.get("REPLICA_NAME", "-") if has_app_context() else "-"
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Send the app's logs to stderr (gunicorn's error log) with replica and request id."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
