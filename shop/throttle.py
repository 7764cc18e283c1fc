"""Login throttling with Redis counters: per username *and source*, and per source.

Every attempt is counted *before* the password is checked (INCR is atomic, so
a burst spread over many replicas gets exactly the allowed number of tries);
a successful login clears its (username, source) counter. Counters expire with
their window, so nothing needs sweeping.

Why per username and source, not per username alone: a per-user counter fed
from everywhere lets any stranger lock the owner out (six wrong tries, and the
right password is refused for the whole window). Counted per (username,
source), a guesser is slowed to `per_user` tries per window from each address
and `per_ip` tries per address whatever the names, while the owner, from
anywhere else, logs in as usual. What it gives up: a guesser with many
addresses gets `per_user` tries per address. A backoff that a known device's
cookie passes would close that too; it needs a device registry, and the
per-address limit already prices each address at `per_ip` tries per window.

A source is the client's address as shop/proxy.py establishes it; IPv6
addresses count per /64, the block one subscriber usually gets (counting per
/128 would let one machine rotate through 2**64 "sources").

A few lines of Redis were chosen over Flask-Limiter because the rule needs to
reset on success and to share the store and failure handling the rest of the
shop already has.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from . import keys
from .errors import ShopError
from .shopstore import ShopStore

IPV6_SOURCE_PREFIX = 64


@dataclass(frozen=True)
class Limits:
    per_user: int  # per (username, source)
    per_ip: int  # per source, all names together
    window_seconds: int


def source_of(address: str) -> str:
    """The throttle's notion of one source: the IPv4 address, or the IPv6 /64."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address  # "unknown", or a unix-socket peer without an address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_SOURCE_PREFIX}", strict=False))
    return str(parsed)


def count_attempt(store: ShopStore, folded_username: str, address: str, limits: Limits) -> None:
    """Count one login attempt; raise a 429 with Retry-After once a limit is passed."""
    source = source_of(address)
    user_key = keys.login_throttle_user(folded_username, source)
    ip_key = keys.login_throttle_ip(source)
    pipe = store.client.pipeline(transaction=True)
    for key in (user_key, ip_key):
        pipe.incr(key)
        pipe.expire(key, limits.window_seconds, nx=True)
        pipe.ttl(key)
    user_count, _, user_ttl, ip_count, _, ip_ttl = pipe.execute()
    waits = []
    if user_count > limits.per_user:
        waits.append(user_ttl)
    if ip_count > limits.per_ip:
        waits.append(ip_ttl)
    if waits:
        retry_after = max(1, max(waits))
        raise ShopError(
            429,
            "too_many_attempts",
            f"Too many login attempts. Try again in {retry_after} seconds.",
            retry_after=retry_after,
        )


def clear_user(store: ShopStore, folded_username: str, address: str) -> None:
    """Forget a username's attempts from this source after it logged in successfully."""
    store.client.delete(keys.login_throttle_user(folded_username, source_of(address)))
