"""Heartbeats: every worker says "alive" in Redis once a second; the cluster view reads them.

Why in Redis: it is the one thing every replica (and the launcher) can already
reach, so the cluster page on any replica can list all the others, and a
replica that dies simply stops refreshing its key, whose TTL does the rest.

Each gunicorn worker runs one daemon thread (:class:`Heartbeat`) that, about
every second, in one pipelined round trip: refreshes its worker hash (short
TTL), records the beat time in the workers index, and adds the requests it
served since its last beat to the current 10-s bucket of its replica. No
request ever writes to Redis for this. Key shapes are documented in
shop/keys.py. :func:`read_cluster` aggregates workers per replica (two round
trips); clocks are the replicas' own, fine on one host or NTP-synced hosts.

This module does not import Flask: the launcher's `status` reads it too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from . import keys

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 1.0
TTL_SECONDS = 3  # three missed beats: the worker is gone
BUCKET_SECONDS = 10
MINUTE_BUCKETS = 6  # the current bucket and the five before it
BUCKET_TTL_SECONDS = BUCKET_SECONDS * (MINUTE_BUCKETS + 3)
GONE_MEMORY_SECONDS = 600  # a lapsed replica is listed as gone for this long
MEMBER_SEPARATOR = "|"


def bucket_of(now: float) -> int:
    return int(now // BUCKET_SECONDS)


class Heartbeat:
    """One worker's heartbeat thread; `served` returns the requests it has answered so far."""

    def __init__(
        self,
        client: redis.Redis,
        replica: str,
        served: Callable[[], int],
        *,
        started: float | None = None,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self.client = client
        self.replica = replica
        self.served = served
        self.pid = os.getpid()
        self.worker_started = time.time()
        self.started = started or self.worker_started
        self.interval = interval
        self.reported = 0  # requests already added to a bucket
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def beat(self, now: float | None = None) -> None:
        """Write one heartbeat (one round trip); raises if Redis cannot be reached."""
        now = time.time() if now is None else now
        served = self.served()
        delta = served - self.reported
        member = f"{self.replica}{MEMBER_SEPARATOR}{self.pid}"
        worker_key = keys.cluster_worker(self.replica, self.pid)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(
            worker_key,
            mapping={
                "replica": self.replica,
                "pid": self.pid,
                "started": self.started,
                "worker_started": self.worker_started,
                "requests": served,
                "beat": now,
            },
        )
        pipe.expire(worker_key, TTL_SECONDS)
        pipe.zadd(keys.cluster_workers(), {member: now})
        pipe.zremrangebyscore(keys.cluster_workers(), "-inf", now - GONE_MEMORY_SECONDS)
        if delta > 0:
            bucket = keys.cluster_requests(bucket_of(now))
            pipe.hincrby(bucket, self.replica, delta)
            pipe.expire(bucket, BUCKET_TTL_SECONDS)
        pipe.execute()
        self.reported = served  # only once written: a failed beat's requests go in the next

    def _run(self) -> None:
        while True:  # beat at once (a new worker shows up without delay), then every interval
            try:
                self.beat()
            except Exception as exc:  # never let the thread die; Redis may come back
                if not self._failing:
                    log.warning("heartbeat failed (%s); retrying every %ss", exc, self.interval)
                self._failing = True
            else:
                if self._failing:
                    log.info("heartbeat restored")
                self._failing = False
            if self._stop.wait(self.interval):
                return

    def start(self) -> Heartbeat:
        """Start the thread (call in the worker process, after gunicorn forked it)."""
        self._thread = threading.Thread(target=self._run, name="shop-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop beating and remove this worker's key (a graceful exit is gone at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.client.delete(keys.cluster_worker(self.replica, self.pid))
        except Exception as exc:
            log.info("could not remove the heartbeat key at exit: %s", exc)


@dataclass
class ReplicaView:
    """One replica as the cluster page shows it."""

    name: str
    alive: bool
    workers: int
    pids: list[int] = field(default_factory=list)
    started: float | None = None
    uptime_seconds: float | None = None
    requests_total: int | None = None
    requests_last_minute: int = 0
    last_seen: float = 0.0
    seconds_since_seen: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_cluster(client: redis.Redis, now: float | None = None) -> list[ReplicaView]:
    """Every replica seen in the last 10 minutes, alive ones first, then by name.

    Two round trips: the workers index, then every worker hash and the last
    minute's buckets in one pipeline. `client` decodes responses (as every
    client of the shop does), so names and values arrive as text.
    """
    now = time.time() if now is None else now
    members = client.zrangebyscore(
        keys.cluster_workers(), now - GONE_MEMORY_SECONDS, "+inf", withscores=True
    )
    pipe = client.pipeline(transaction=False)
    for member, _ in members:
        replica, _, pid = member.rpartition(MEMBER_SEPARATOR)
        pipe.hgetall(keys.cluster_worker(replica, int(pid or 0)))
    current = bucket_of(now)
    for bucket in range(current - MINUTE_BUCKETS + 1, current + 1):
        pipe.hgetall(keys.cluster_requests(bucket))
    replies = pipe.execute()
    workers, buckets = replies[: len(members)], replies[len(members) :]

    views: dict[str, ReplicaView] = {}
    for (member, score), info in zip(members, workers, strict=True):
        name = member.rpartition(MEMBER_SEPARATOR)[0]
        view = views.setdefault(name, ReplicaView(name=name, alive=False, workers=0))
        view.last_seen = max(view.last_seen, score)
        if not info:
            continue  # lapsed: the last-seen time is all that is left of this worker
        view.alive = True
        view.workers += 1
        view.pids.append(int(info.get("pid", 0)))
        view.requests_total = (view.requests_total or 0) + int(info.get("requests", 0))
        started = _float(info.get("started"))
        if started is not None:
            view.started = started if view.started is None else min(view.started, started)
    for bucket in buckets:
        for name, count in bucket.items():
            view = views.get(name)
            if view is not None:
                view.requests_last_minute += int(count)
    for view in views.values():
        view.pids.sort()
        view.seconds_since_seen = round(max(0.0, now - view.last_seen), 1)
        if view.alive and view.started is not None:
            view.uptime_seconds = round(max(0.0, now - view.started), 1)
    return sorted(views.values(), key=lambda v: (not v.alive, _natural(v.name)))


def _natural(name: str) -> tuple[str, int, str]:
    """shop-2 before shop-10."""
    stem, _, number = name.rpartition("-")
    return (stem, int(number), "") if number.isdigit() else (name, 0, name)
