"""Helpers shared by the sessionstore tests: counting round trips, reading Redis.

Kept out of conftest so the test files can import them by name.
"""

from __future__ import annotations

import redis

COOKIE = "session"  # Flask's default session cookie name


class CountingConnection(redis.Connection):
    """Counts what the client sends: one send is one round trip."""

    sends = 0

    def send_packed_command(self, command, check_health=True):
        type(self).sends += 1
        return super().send_packed_command(command, check_health)


def cookie_of(client) -> str | None:
    """The session cookie a test client holds, if any."""
    cookie = client.get_cookie(COOKIE)
    return cookie.value if cookie else None


def session_keys(r: redis.Redis) -> list[str]:
    """Every session hash in Redis (not the per-user indexes)."""
    return [k for k in r.scan_iter("sess:*") if not k.startswith("sess:user:")]
