"""Believe X-Forwarded-For/-Proto only when the peer is a trusted proxy (nginx).

werkzeug's ProxyFix trusts whoever sends the headers; a client reaching a
replica directly could then pick its own address and dodge the per-address
login throttle. This wrapper applies ProxyFix only for trusted peers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix


class TrustedProxyFix:
    """WSGI middleware: ProxyFix (one hop) for requests from `trusted` addresses only."""

    def __init__(self, app: Any, trusted: Iterable[str]) -> None:
        self.app = app
        self.fixed = ProxyFix(app, x_for=1, x_proto=1)
        self.trusted = frozenset(trusted)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REMOTE_ADDR") in self.trusted:
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)
