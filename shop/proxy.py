"""Believe X-Forwarded-For/-Proto only when the peer is a trusted proxy (nginx).

werkzeug's ProxyFix trusts whoever sends the headers; a client reaching a
replica directly could then pick its own address and dodge the per-address
login throttle. This wrapper applies ProxyFix only for trusted peers, named
in ``SHOP_TRUSTED_PROXIES`` as a comma-separated list of:

- addresses (``127.0.0.1``, ``::1``) or CIDR ranges (``10.0.0.0/8``, where
  the proxies have no fixed address, as nginx pods in Kubernetes: there the
  NetworkPolicy that lets only nginx reach the shop is what makes the range
  trustworthy);
- ``unix``: peers on a unix socket (gunicorn gives them no address). The
  launcher binds every replica to a socket only its own user, nginx's, may
  open, so "came over the socket" means "came through nginx".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

UNIX_PEERS = "unix"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted(entries: Iterable[str]) -> tuple[list[Network], bool]:
    """(networks, unix) from the entries of SHOP_TRUSTED_PROXIES; ValueError names a bad one."""
    networks: list[Network] = []
    unix = False
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        if entry == UNIX_PEERS:
            unix = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"SHOP_TRUSTED_PROXIES: {entry!r} is not an address, a CIDR range or {UNIX_PEERS!r}"
            ) from None
    return networks, unix


class TrustedProxyFix:
    """WSGI middleware: ProxyFix (one hop) for requests from `trusted` peers only."""

    def __init__(self, app: Any, trusted: Iterable[str]) -> None:
        self.app = app
        self.fixed = ProxyFix(app, x_for=1, x_proto=1)
        self.networks, self.unix = parse_trusted(trusted)

    def is_trusted(self, peer: str | None) -> bool:
        """Whether a request from `peer` (REMOTE_ADDR) came through a trusted proxy."""
        if not peer:
            return self.unix  # a unix-socket peer has no address
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.is_trusted(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)
