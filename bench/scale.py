"""Redis at scale: a million sessions in sessionstore's own format.

Sessions are written through the library's public API,
`SessionStore.import_sessions` (the save script a login runs, pipelined), so
they are the hash + per-user index a login leaves behind (see
sessionstore/README.md, "Redis data model") and the benchmark cannot drift
from the library; a sample is read back through `SessionStore.load`. At each
checkpoint the benchmark reports
memory per session (INFO used_memory delta / sessions) and the latency of
`SessionStore.load` (client side, what a web worker waits for) and of its
commands inside Redis (commandstats), to show a read does not slow down as
the keyspace grows: every lookup is a hash-table lookup by key.
"""

from __future__ import annotations

import base64
import hashlib
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis

from sessionstore import SessionStore
from shop.cluster import procs

from .apps import SECRET_KEY, session_content

IDLE = timedelta(minutes=30)
BATCH = 5_000
DEFAULT_COUNTS = (10_000, 100_000, 1_000_000)
LATENCY_SAMPLES = 5_000


@dataclass(frozen=True)
class ScaleConfig:
    counts: tuple[int, ...] = DEFAULT_COUNTS
    samples: int = LATENCY_SAMPLES


def synthetic_sid(number: int) -> str:
    """A cookie id shaped like a real one (44 url-safe characters, as
    sessionstore.session.new_sid draws them), derived from `number`, so a
    million of them need not be kept in memory."""
    digest = hashlib.sha256(f"bench-session-{number}".encode()).digest()
    return base64.urlsafe_b64encode(digest + b"+").decode()[:44]


def write_sessions(store: SessionStore, start: int, stop: int) -> None:
    """Store sessions [start, stop) as a login leaves them: hash + user index, with TTLs."""
    store.import_sessions(
        ((synthetic_sid(number), session_content(number)) for number in range(start, stop)),
        batch=BATCH,
    )


def read_latency(store: SessionStore, admin: redis.Redis, count: int, samples: int) -> dict:
    """p50/p99 of SessionStore.load on random existing sessions, and its time
    inside Redis per load (commandstats: HGETALL and PTTL, and load.lua where a
    load ran it, whose inner commands then count twice)."""
    rng = random.Random(count)
    admin.config_resetstat()
    timings = []
    for _ in range(samples):
        sid = synthetic_sid(rng.randrange(count))
        t0 = time.perf_counter()
        loaded = store.load(sid)
        timings.append(time.perf_counter() - t0)
        if loaded is None:
            raise RuntimeError(f"synthetic session {sid} not found: the format is not the real one")
    stats = admin.info("commandstats")
    server_us = sum(
        float(stats.get(f"cmdstat_{name}", {}).get("usec", 0))
        for name in ("hgetall", "pttl", "evalsha")
    )
    cuts = statistics.quantiles(timings, n=100)
    return {
        "p50_us": round(cuts[49] * 1e6, 1),
        "p99_us": round(cuts[98] * 1e6, 1),
        "server_us_per_call": round(server_us / samples, 2),
    }


def run_scale(
    workdir: Path, config: ScaleConfig, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Load up to max(counts) sessions into a fresh redis-server; measure at each count."""
    port = procs.free_port()
    # No AOF: a million sessions written to disk would only measure the disk.
    server = procs.start_redis(workdir / "scale-redis", port, extra={"appendonly": "no"})
    try:
        client = redis.Redis(host=procs.LOOPBACK, port=port, socket_timeout=30)
        store = SessionStore(
            redis.Redis(host=procs.LOOPBACK, port=port, socket_timeout=5),
            idle_timeout=IDLE,
            secret_key=SECRET_KEY,
        )
        base_memory = int(client.info("memory")["used_memory"])
        # Warm the client and the script cache before anything is timed.
        write_sessions(store, 0, 1)
        store.load(synthetic_sid(0))
        checkpoints = []
        loaded = 1
        for count in sorted(config.counts):
            t0 = time.monotonic()
            for start in range(loaded, count, 100_000):
                write_sessions(store, start, min(start + 100_000, count))
                progress(f"scale: {min(start + 100_000, count):,} / {count:,} sessions loaded")
            load_seconds = time.monotonic() - t0
            loaded = count
            memory = int(client.info("memory")["used_memory"])
            point = {
                "sessions": count,
                "dbsize": client.dbsize(),
                "load_seconds": round(load_seconds, 1),
                "used_memory_mb": round(memory / 2**20, 1),
                "bytes_per_session": round((memory - base_memory) / count),
                **read_latency(store, client, count, config.samples),
            }
            checkpoints.append(point)
            progress(
                f"scale: {count:>9,} sessions  {point['bytes_per_session']} B/session  "
                f"load p50 {point['p50_us']} us p99 {point['p99_us']} us  "
                f"in Redis {point['server_us_per_call']} us"
            )
        sample = store.load(synthetic_sid(7))
        if sample is None or sample.data != session_content(7):
            raise RuntimeError("a synthetic session did not read back as written")
        anatomy = key_anatomy(client, store, 7)
        redis_version = client.info("server")["redis_version"]
    finally:
        procs.stop_process(server.pid)
    return {
        "config": {"counts": list(config.counts), "samples": config.samples},
        "redis_version": redis_version,
        "anatomy": anatomy,
        "checkpoints": checkpoints,
    }


def key_anatomy(client: redis.Redis, store: SessionStore, number: int) -> dict[str, Any]:
    """MEMORY USAGE and encoding of one session's hash and of its user index:
    where the bytes per session go."""
    content = session_content(number)
    keys = store.keys
    key = keys.session(synthetic_sid(number))
    out: dict[str, Any] = {}
    for role, name in (("hash", key), ("user_index", keys.user_index(content["user_id"]))):
        out[role] = _usage(client, name)
    limit = client.config_get("zset-max-listpack-value").get(b"zset-max-listpack-value")
    out["zset_max_listpack_value"] = int(limit or 64)
    return out


def _usage(client: redis.Redis, key: str) -> dict[str, Any]:
    return {
        "key_length": len(key),
        "bytes": client.memory_usage(key, samples=0),
        "encoding": client.object("encoding", key).decode(),
    }
