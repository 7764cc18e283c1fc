"""Redis clients from URLs, with the timeouts and retries a web worker needs.

A dead Redis must never hang a worker: every client gets a connect timeout and
a socket timeout. Retries with exponential backoff are bounded, so a Sentinel
failover (a few seconds) can be ridden out while a long outage still fails
fast enough to answer 503.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from .errors import TRANSIENT_REDIS_ERRORS

SENTINEL_SCHEME = "redis+sentinel"


def redis_from_url(
    url: str,
    *,
    socket_timeout: float = 2.0,
    socket_connect_timeout: float = 1.0,
    retries: int = 2,
    backoff_base: float = 0.05,
    backoff_cap: float = 0.5,
    decode_responses: bool = False,
    redis_class: type[redis.Redis] = redis.Redis,
    **kwargs: Any,
) -> redis.Redis:
    """Build a client for `url`: an instance of `redis_class` (a subclass of
    redis.Redis, e.g. one that times its round trips).

    Schemes: ``redis://``, ``rediss://``, ``unix://`` (as redis-py reads them)
    and ``redis+sentinel://[:password@]host:port[,host:port]/service_name[/db]``,
    which asks the Sentinels for the current primary on every reconnect, so
    the client follows a failover without a restart.
    """
    retry = Retry(ExponentialWithJitterBackoff(base=backoff_base, cap=backoff_cap), retries)
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "retry": retry,
        "retry_on_error": list(TRANSIENT_REDIS_ERRORS),
        "health_check_interval": 30,
        "decode_responses": decode_responses,
        **kwargs,
    }
    if urlsplit(url).scheme == SENTINEL_SCHEME:
        return _sentinel_primary(url, options, redis_class)
    return redis_class.from_url(url, **options)


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """Split a ``redis+sentinel://`` URL into (sentinels, service, db, password)."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL: {url!r}")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    password = unquote(userinfo.split(":", 1)[1]) if ":" in userinfo else None
    sentinels = []
    for hostport in filter(None, hostlist.split(",")):
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address must be host:port, got {hostport!r} in {url!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path:
        raise ValueError(f"expected {SENTINEL_SCHEME}://host:port[,host:port]/service[/db]")
    db = int(path[1]) if len(path) > 1 else int(parse_qs(parts.query).get("db", ["0"])[0])
    return sentinels, path[0], db, password


def _sentinel_primary(
    url: str, options: dict[str, Any], redis_class: type[redis.Redis]
) -> redis.Redis:
    sentinels, service, db, password = parse_sentinel_url(url)
    sentinel = Sentinel(
        sentinels,
        sentinel_kwargs={
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
        },
        **{k: v for k, v in options.items() if k != "health_check_interval"},
    )
    return sentinel.master_for(service, redis_class=redis_class, db=db, password=password)
