"""One Redis round trip for as little client CPU as redis-py allows.

A call through ``redis.Redis`` costs about 160,000 CPU instructions here
(measured with callgrind, see bench/RESULTS.md): a pool checkout that polls
the socket, a retry wrapper, observability hooks, a pool release. Sending the
packed command on a connection we already hold and reading the reply costs
about 57,000. A session read is one round trip, so that difference is most of
what a read costs the app.

`RoundTrips` keeps a few connections checked out of the client's own pool
(one per concurrent caller, reused across threads) and speaks on them
directly. Everything that makes the client safe stays: the connections come
from the client's pool (so its timeouts, TLS, auth and Sentinel discovery
apply), the connection's health check runs before each send (a PING after 30
idle seconds), and a connection error hands the call to the client itself,
which retries with its backoff (`redis_from_url`'s bounded retries) on a fresh
connection. A timeout is raised at once, never retried, as the client does
(sessionstore/connection.py says why). A connection that failed is closed,
never reused, so a half-read reply cannot leak into the next call.

A client whose class overrides ``execute_command`` (to time or trace every
command) is always called through it, so such a hook still sees every round
trip; `SessionObserver.round_trip` is the cheaper way to time them.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import ResponseError

from .connection import RETRIED_ERRORS

# Every RoundTrips alive in this process, so a fork can make each forget the
# connections it holds (they belong to the parent's sockets).
_ALL: weakref.WeakSet[RoundTrips] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for calls in list(_ALL):
        calls._idle = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class RoundTrips:
    """Sends commands (or a few pipelined ones) to Redis, one round trip each."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        # Held connections not in use right now. list.pop/append are atomic
        # under the GIL, so threads share it without a lock.
        self._idle: list[Any] = []
        self.direct = type(client).execute_command is redis.Redis.execute_command
        _ALL.add(self)

    def call(self, *args: Any) -> Any:
        """One command, e.g. ``call("EVALSHA", sha, 1, key, ...)``: its reply, or
        the error Redis answered, raised."""
        if self.direct:
            conn = self._checkout()
            if conn is not None:
                try:
                    conn.send_packed_command(conn.pack_command(*args))
                    reply = conn.read_response()
                except BaseException as exc:
                    if not self._recover(conn, exc):
                        raise
                else:
                    self._idle.append(conn)
                    return reply
        return self.client.execute_command(*args)

    def pipeline(self, commands: Sequence[Sequence[Any]], packed: bytes | None = None) -> list[Any]:
        """Several commands in one round trip (not a transaction): their replies in
        order, an error reply as a ResponseError in its place (not raised).

        `packed` is the same commands already in Redis's protocol, for a hot path
        that builds its own bytes: redis-py's packer costs about 15,000 CPU
        instructions a command, a bytes template a few hundred."""
        if self.direct:
            conn = self._checkout()
            if conn is not None:
                try:
                    conn.send_packed_command(
                        [packed] if packed is not None else conn.pack_commands(commands)
                    )
                    replies = []
                    for _ in commands:
                        try:
                            replies.append(conn.read_response())
                        except ResponseError as error:
                            replies.append(error)
                except BaseException as exc:
                    if not self._recover(conn, exc):
                        raise
                else:
                    self._idle.append(conn)
                    return replies
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)

    def _checkout(self) -> Any:
        """A held connection, or a new one from the client's pool (kept for good:
        it goes back only if it breaks); None when the pool cannot connect now."""
        try:
            return self._idle.pop()
        except IndexError:
            pass
        try:
            return self.client.connection_pool.get_connection()
        except RETRIED_ERRORS:
            return None  # the client's own path retries the connection with backoff

    def _recover(self, conn: Any, exc: BaseException) -> bool:
        """After `exc` on `conn`: True when the call should go through the client's
        own path (it retries with backoff on a fresh connection), False to raise."""
        retried = isinstance(exc, RETRIED_ERRORS)
        if isinstance(exc, ResponseError) and not retried:
            self._idle.append(conn)  # Redis answered with an error: the connection is fine
            return False
        # Anything else may have left part of a reply unread: never reuse it.
        conn.disconnect()
        self.client.connection_pool.release(conn)
        return retried


__all__ = ["RoundTrips"]
