"""Helpers shared by the sessionstore tests: counting round trips, reading Redis.

Kept out of conftest so the test files can import them by name.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from shop.cluster import procs

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


def start_sentinel(folder: Path, redis_port: int) -> tuple[subprocess.Popen, int]:
    """A real Sentinel on loopback watching the Redis on `redis_port` as service "shop"
    (quorum 1), its files in `folder`: (process, port), ready. The caller stops it."""
    port = procs.free_port()
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
        f"sentinel monitor shop 127.0.0.1 {redis_port} 1\n"
    )
    proc = procs.spawn(
        [procs.find_binary("redis-server"), str(conf), "--sentinel"],
        log_path=folder / "sentinel.log",
    )
    try:
        procs.wait_until(lambda: procs.redis_ping(port), timeout=15, what="a Sentinel")
    except BaseException:
        procs.stop_process(proc.pid, timeout=5)
        raise
    return proc, port
