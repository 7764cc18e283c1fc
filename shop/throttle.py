"""Login throttling with Redis counters, per username and per client address.

Every attempt is counted *before* the password is checked (INCR is atomic, so
a burst spread over many replicas gets exactly the allowed number of tries);
a successful login clears its username's counter. Counters expire with their
window, so nothing needs sweeping. A few lines of Redis were chosen over
Flask-Limiter because the rule needs to reset on success and to share the
store and failure handling the rest of the shop already has.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import keys
from .errors import ShopError
from .shopstore import ShopStore


@dataclass(frozen=True)
class Limits:
    per_user: int
    per_ip: int
    window_seconds: int


def count_attempt(store: ShopStore, folded_username: str, address: str, limits: Limits) -> None:
    """Count one login attempt; raise a 429 with Retry-After once a limit is passed."""
    user_key = keys.login_throttle_user(folded_username)
    ip_key = keys.login_throttle_ip(address)
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


def clear_user(store: ShopStore, folded_username: str) -> None:
    """Forget a username's attempts after it logged in successfully."""
    store.client.delete(keys.login_throttle_user(folded_username))
