"""Redis clients from URLs, with the timeouts and retries a web worker needs.

A dead or hung Redis must never hang a worker: every wait is bounded, and each
bound is what a shopper waits, once, before the store error becomes a 503.

- connect timeout, 0.5 s: Redis is on the same host or LAN, where a connect
  takes well under a millisecond; one not done in 0.5 s is a dead host (a lost
  SYN would only be resent after 1 s).
- socket timeout, 1 s: Redis answers a command in under a millisecond; the
  slowest honest answer is a `WAIT` for a replica's acknowledgement, which
  Redis itself ends after its own timeout (0.5 s in the shop), so 1 s is above
  it. A hung server (a frozen process, a host that vanished) costs this once.
- Sentinel timeouts, 0.5 s each: a Sentinel answers from memory; one that does
  not is skipped for the next one at once (not retried).
- retries, with exponential backoff: only after a connection error (refused,
  reset, a server still loading, a demoted primary), which is fast and is what
  a restart or a Sentinel failover looks like from here. Never after a
  timeout: a server that did not answer in time will not answer a second try
  sooner, and a timed-out write may have been applied already.

Together: a request meets at most one timeout (1 s, or 0.5 s to connect plus
0.5 s per hung Sentinel) before its 503. nginx's read timeout (3 s, see
shop/cluster/nginx.conf.j2) sits above that, so the 503 reaches the shopper.

On Linux the socket timeout is the kernel's (SO_RCVTIMEO / SO_SNDTIMEO on a
blocking socket) rather than Python's: Python enforces its own timeout with a
poll() before every send and every receive, two more system calls per round
trip, each of which also hands the GIL to another thread of a threaded
worker. The kernel's timeout surfaces as the same TimeoutError (so it is not
retried either). TLS connections keep Python's timeout.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.connection import SSLConnection
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from .errors import TRANSIENT_REDIS_ERRORS

SENTINEL_SCHEME = "redis+sentinel"
SOCKET_TIMEOUT = 1.0
CONNECT_TIMEOUT = 0.5
SENTINEL_TIMEOUT = 0.5
# How much longer than the longest WAIT a socket waits for its answer.
WAIT_MARGIN = 0.5
# The transient errors worth a second try: all but a timeout (see above).
RETRIED_ERRORS: tuple[type[BaseException], ...] = tuple(
    e for e in TRANSIENT_REDIS_ERRORS if not issubclass(e, redis.exceptions.TimeoutError)
)


class KernelTimeouts:
    """Mixin for a redis-py connection class: once connected, the socket blocks
    and the kernel bounds each send and receive by `socket_timeout` (see above)."""

    socket_timeout: float | None

    def _connect(self) -> socket.socket:
        sock = super()._connect()  # type: ignore[misc]
        timeout = self.socket_timeout
        if timeout:
            seconds = int(timeout)
            # struct timeval on Linux: two C longs, seconds and microseconds.
            value = struct.pack("@ll", seconds, round((timeout - seconds) * 1_000_000))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            sock.settimeout(None)
        return sock

    # redis-py reports the kernel's timeout (EAGAIN on a blocking socket) as a
    # ConnectionError caused by a BlockingIOError: say what it is, a timeout.

    def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().send_packed_command(*args, **kwargs)  # type: ignore[misc]
        except redis.ConnectionError as exc:
            if isinstance(exc.__context__, BlockingIOError):
                raise redis.TimeoutError("Timeout writing to socket") from exc
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.ConnectionError as exc:
            if isinstance(exc.__context__, BlockingIOError):
                raise redis.TimeoutError("Timeout reading from socket") from exc
            raise


class KernelTimeoutConnection(KernelTimeouts, redis.Connection):
    """TCP (``redis://``)."""


class KernelTimeoutUnixConnection(KernelTimeouts, redis.UnixDomainSocketConnection):
    """A unix socket (``unix://``)."""


class InStepSentinelConnection(SentinelManagedConnection):
    """The current primary of a Sentinel service (``redis+sentinel://``), closed
    when a read fails before a whole reply has arrived.

    A command that timed out may still be answered later (a hung server that
    wakes up, a partition that heals while TCP resends). redis-py's plain
    connection closes itself on such a failure; its Sentinel connection does
    not (its read_response defaults to disconnect_on_error=False), and the
    client closes a connection only before a retry, which a timeout never gets
    (see above). Back in the pool, the connection's next command would read the
    late reply as its own: another request's data. Measured, not assumed:
    tests/test_redis_timeouts.py.
    """

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("disconnect_on_error", True)
        return super().read_response(*args, **kwargs)


class InStepSentinelSSLConnection(InStepSentinelConnection, SSLConnection):
    """The same over TLS (``ssl=True``), as redis-py's SentinelManagedSSLConnection."""


class KernelTimeoutSentinelConnection(KernelTimeouts, InStepSentinelConnection):
    """The current primary of a Sentinel service, with the kernel's timeouts."""


def _connection_class(url: str, options: dict[str, Any]) -> type | None:
    """The connection class for `url`'s scheme, or None to keep redis-py's.

    The kernel's timeouts on Linux without TLS (TLS keeps Python's timeout);
    a Sentinel service's connections are kept in step everywhere."""
    scheme = urlsplit(url).scheme
    if sys.platform != "linux" or options.get("ssl"):
        if scheme != SENTINEL_SCHEME:
            return None
        return InStepSentinelSSLConnection if options.get("ssl") else InStepSentinelConnection
    return {
        "redis": KernelTimeoutConnection,
        "unix": KernelTimeoutUnixConnection,
        SENTINEL_SCHEME: KernelTimeoutSentinelConnection,
    }.get(scheme)


def redis_from_url(
    url: str,
    *,
    socket_timeout: float = SOCKET_TIMEOUT,
    socket_connect_timeout: float = CONNECT_TIMEOUT,
    sentinel_timeout: float = SENTINEL_TIMEOUT,
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
    the client follows a failover without a restart. `sentinel_timeout` bounds
    each question to a Sentinel (connect and answer). The URL's password is
    given to every server the URL leads to: the Sentinels it names
    (``requirepass`` on a Sentinel, or anyone who reaches it could repoint
    the clients to a Redis of their own) and the primary they name.

    `retries` retries follow connection errors only (`RETRIED_ERRORS`), never
    a timeout. The defaults and why they are what they are: the module's
    docstring.
    """
    backoff = ExponentialWithJitterBackoff(base=backoff_base, cap=backoff_cap)
    # redis-py retries timeouts too unless told which errors it may retry.
    retry = Retry(backoff, retries, supported_errors=RETRIED_ERRORS)
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "retry": retry,
        "retry_on_error": list(RETRIED_ERRORS),
        "health_check_interval": 30,
        "decode_responses": decode_responses,
        **kwargs,
    }
    connection_class = _connection_class(url, options)
    if connection_class is not None:
        options.setdefault("connection_class", connection_class)
    if urlsplit(url).scheme == SENTINEL_SCHEME:
        return _sentinel_primary(url, options, redis_class, sentinel_timeout)
    return redis_class.from_url(url, **options)


def socket_timeout_for(longest_wait: float) -> float:
    """The socket timeout for a client that may `WAIT` up to `longest_wait` seconds
    for replica acknowledgements (Redis blocks that long before it answers):
    `SOCKET_TIMEOUT`, or longer when the WAIT asks for it."""
    return max(SOCKET_TIMEOUT, longest_wait + WAIT_MARGIN)


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
    url: str, options: dict[str, Any], redis_class: type[redis.Redis], timeout: float
) -> redis.Redis:
    sentinels, service, db, password = parse_sentinel_url(url)
    sentinel = Sentinel(
        sentinels,
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # A Sentinel that does not answer is passed over for the next one at
            # once; redis-py's default would retry it 3 times with backoff (~10 s).
            "retry": Retry(NoBackoff(), 0),
            "password": password,
        },
        **{k: v for k, v in options.items() if k != "health_check_interval"},
    )
    return sentinel.master_for(service, redis_class=redis_class, db=db, password=password)
