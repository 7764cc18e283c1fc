"""Prometheus metrics of one replica, served at ``/metrics``.

gunicorn runs several worker processes per replica; a scrape reaches one of
them, so each worker's counters must add up. prometheus_client's multiprocess
mode does that: every worker writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` and the scrape sums them. shop/gunicorn_conf.py
sets that directory (one per replica) before any worker starts, because
prometheus_client picks its value store when first imported. Without it (the
Flask test client, a single process) the default in-process registry is used.

Everything is recorded at a few choke points, each named where it is wired
in (create_app, shop/wsgi.py), so no view has metrics code and no request pays
an extra Redis round trip:

- :class:`RequestObserver` (WSGI middleware): requests by endpoint, method and
  status, their latency, requests in progress; it also writes the JSON access
  line (shop/logs.py) and counts requests for the heartbeat (shop/heartbeat.py);
- :class:`TimedRedis` (a ``redis.Redis`` subclass, one per client label, given
  to ``sessionstore.redis_from_url(redis_class=...)``): every Redis round trip
  of that client (single command or pipeline) and its errors;
- :class:`SessionMetrics` (a ``sessionstore.SessionObserver``, given to the
  session interface): sessions created and destroyed, and every round trip of
  the session store (``client="sessions"``), timed by the store itself so its
  client stays a plain ``redis.Redis`` and keeps sessionstore's cheaper call
  path (a subclass that overrides ``execute_command`` opts out of it);
- :class:`ScriptMetrics` (a ``shop.shopstore.ScriptObserver``, given to the
  ShopStore): cart operations, checkouts and idempotent replays, from the
  outcome of every Lua script, and writes too few replicas confirmed in time
  (with ``SHOP_REPLICA_ACKS`` > 0);
- :func:`record_store_unavailable`: 503s because Redis is unreachable
  (shop/handlers.py).

Metric names (all prefixed ``shop_``):

======================================  =========  ===============================
name                                    type       labels
======================================  =========  ===============================
shop_http_requests_total                counter    endpoint, method, status
shop_http_request_duration_seconds      histogram  endpoint
shop_http_requests_in_progress          gauge      (summed over live workers)
shop_redis_command_duration_seconds     histogram  client, command
shop_redis_errors_total                 counter    client, error
shop_sessions_created_total             counter
shop_sessions_destroyed_total           counter
shop_cart_operations_total              counter    operation, result
shop_checkouts_total                    counter    result (ok, out_of_stock, empty_cart)
shop_idempotent_replays_total           counter    script
shop_store_unavailable_total            counter    (503s because Redis is down)
shop_writes_not_replicated_total        counter    (WAIT short of replicas: a 503)
======================================  =========  ===============================
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from flask import Blueprint, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

from sessionstore import SessionObserver

from . import logs
from .shopstore import ScriptObserver

ENDPOINT_KEY = "shop.endpoint"  # set in the WSGI environ by handlers._begin_request
UNMATCHED = "unmatched"  # requests no route matched (404s, scanners): one label value

# Web requests take milliseconds; the tail matters up to nginx's 30 s read timeout.
REQUEST_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A loopback Redis round trip is ~0.1-0.5 ms; seconds mean timeouts and retries.
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0)

HTTP_REQUESTS = Counter(
    "shop_http_requests_total", "HTTP requests answered", ["endpoint", "method", "status"]
)
HTTP_DURATION = Histogram(
    "shop_http_request_duration_seconds",
    "Time from the request reaching the app to its response",
    ["endpoint"],
    buckets=REQUEST_BUCKETS,
)
IN_PROGRESS = Gauge(
    "shop_http_requests_in_progress",
    "Requests being handled right now",
    multiprocess_mode="livesum",
)
REDIS_DURATION = Histogram(
    "shop_redis_command_duration_seconds",
    "One Redis round trip (a command, a script or a whole pipeline)",
    ["client", "command"],
    buckets=REDIS_BUCKETS,
)
REDIS_ERRORS = Counter(
    "shop_redis_errors_total", "Redis round trips that raised", ["client", "error"]
)
SESSIONS_CREATED = Counter("shop_sessions_created_total", "Sessions first stored in Redis")
SESSIONS_DESTROYED = Counter(
    "shop_sessions_destroyed_total", "Sessions deleted on purpose (logout, revoke)"
)
CART_OPERATIONS = Counter(
    "shop_cart_operations_total", "Cart changes (replays excluded)", ["operation", "result"]
)
CHECKOUTS = Counter("shop_checkouts_total", "Checkouts (replays excluded)", ["result"])
IDEMPOTENT_REPLAYS = Counter(
    "shop_idempotent_replays_total",
    "Requests answered from a stored first result (a retry or a resubmitted form)",
    ["script"],
)
STORE_UNAVAILABLE = Counter(
    "shop_store_unavailable_total", "Requests answered 503 because Redis was unreachable"
)

NOT_REPLICATED = Counter(
    "shop_writes_not_replicated_total",
    "Domain writes answered 503 because too few replicas confirmed them in time",
)

CART_SCRIPTS = {"cart_add": "add", "cart_set": "set", "cart_merge": "merge"}

bp = Blueprint("metrics", __name__)


def exposition(multiprocess_dir: str | None) -> bytes:
    """The metrics text: summed over every worker of this replica when they share
    `multiprocess_dir` (``PROMETHEUS_MULTIPROC_DIR``), else this process's own."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus scrapes each replica here (nginx does not forward /metrics)."""
    body = exposition(current_app.config["PROMETHEUS_MULTIPROC_DIR"])
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- Redis ---------------------------------------------------------------------


def _timed(label: str, command: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)`, one Redis round trip: timed, and counted if it raises."""
    start = time.perf_counter()
    try:
        return call(*args, **kwargs)
    except Exception as exc:
        REDIS_ERRORS.labels(label, type(exc).__name__).inc()
        raise
    finally:
        REDIS_DURATION.labels(label, command).observe(time.perf_counter() - start)


class TimedPipeline(redis.client.Pipeline):
    """A pipeline whose execute (one round trip, whatever it holds) is timed."""

    label = "redis"

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        return _timed(self.label, "PIPELINE", super().execute, raise_on_error)


class TimedRedis(redis.Redis):
    """A client that times every round trip and counts its errors, under `label`.

    Every command (the shop's, its Lua scripts, sessionstore's) goes through
    execute_command, and every pipeline through its execute: these two
    overrides see all of a client's traffic. Build one with
    ``sessionstore.redis_from_url(url, redis_class=timed_redis("shop"))``.
    """

    label = "redis"

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return _timed(self.label, str(args[0]).upper(), super().execute_command, *args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> TimedPipeline:
        pipe = TimedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.label = self.label
        return pipe


@functools.cache
def timed_redis(label: str) -> type[TimedRedis]:
    """The TimedRedis class whose metrics carry ``client=<label>`` (sessions, shop, heartbeat)."""
    return type(f"TimedRedis_{label}", (TimedRedis,), {"label": label})


# -- sessions and scripts --------------------------------------------------------


class SessionMetrics(SessionObserver):
    """Counts sessions created and ended, and times the session store's round
    trips, as the session store reports them."""

    label = "sessions"

    def session_created(self) -> None:
        SESSIONS_CREATED.inc()

    def sessions_ended(self, count: int) -> None:
        SESSIONS_DESTROYED.inc(count)

    def round_trip(self, command: str, seconds: float, error: BaseException | None) -> None:
        if error is not None:
            REDIS_ERRORS.labels(self.label, type(error).__name__).inc()
        REDIS_DURATION.labels(self.label, command).observe(seconds)


class ScriptMetrics(ScriptObserver):
    """Counts what the shop's Lua scripts did, as shop.atomic.run reports it."""

    def script_ran(self, name: str, result: dict[str, Any], replayed: bool) -> None:
        """A replay changed nothing, so it counts only as a replay."""
        if replayed:
            IDEMPOTENT_REPLAYS.labels(name).inc()
            return
        outcome = str(result.get("error") or "ok")
        if name in CART_SCRIPTS:
            CART_OPERATIONS.labels(CART_SCRIPTS[name], outcome).inc()
        elif name == "checkout":
            CHECKOUTS.labels(outcome).inc()

    def not_replicated(self, name: str) -> None:
        """One more write that WAIT found short of replicas (it is then answered 503)."""
        NOT_REPLICATED.inc()


def record_store_unavailable() -> None:
    """One more 503 because Redis could not be reached."""
    STORE_UNAVAILABLE.inc()


# -- requests --------------------------------------------------------------------


class RequestObserver:
    """WSGI middleware: per-request metrics, the JSON access line and the served count.

    It sits outside Flask, so every request is seen exactly once, whatever
    error handling happened inside, and its status and request id are read
    from the response headers the app produced.
    """

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.replica = replica
        self._served = itertools.count(1)
        self.served = 0  # requests answered by this process: the heartbeat reports it

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        start = time.perf_counter()
        seen: dict[str, Any] = {}

        def observing_start_response(status: str, headers: list, *args: Any) -> Any:
            seen["status"] = status
            seen["headers"] = headers
            return start_response(status, headers, *args)

        IN_PROGRESS.inc()
        try:
            return self.app(environ, observing_start_response)
        finally:
            IN_PROGRESS.dec()
            self._finished(environ, seen, time.perf_counter() - start)

    def _finished(self, environ: dict[str, Any], seen: dict[str, Any], seconds: float) -> None:
        status = int(str(seen.get("status", "500")).split(" ", 1)[0])
        endpoint = environ.get(ENDPOINT_KEY) or UNMATCHED
        method = environ.get("REQUEST_METHOD", "-")
        HTTP_REQUESTS.labels(endpoint, method, str(status)).inc()
        HTTP_DURATION.labels(endpoint).observe(seconds)
        self.served = next(self._served)
        request_id = next(
            (v for k, v in seen.get("headers", []) if k.lower() == "x-request-id"), "-"
        )
        logs.access(
            replica=self.replica,
            request_id=request_id or "-",
            method=method,
            path=environ.get("PATH_INFO", ""),
            status=status,
            seconds=seconds,
        )
