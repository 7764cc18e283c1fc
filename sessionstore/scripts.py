"""Running a Lua script in one round trip, optionally waiting for replicas.

Shared by sessionstore and by applications that keep their own scripts (the
shop does): EVALSHA, loading the script only when Redis does not know it
(after a restart, or on a replica promoted by a failover, since scripts are
replicated as their effects), and, when asked, a WAIT for replicas pipelined
with it, so a durable write still costs one round trip. The round trip goes
through `RoundTrips` (sessionstore/roundtrip.py), the cheapest safe call path.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError, ResponseError

from .errors import NotReplicated, WriteRefused, refused_for_replicas
from .roundtrip import RoundTrips


@dataclass(frozen=True)
class LuaScript:
    """A script's text and its SHA1, as EVALSHA names it."""

    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)

    @classmethod
    def load(cls, package: str, *names: str) -> LuaScript:
        """One script from the files ``<package>/lua/<name>.lua``, joined in order.

        Redis 7 scripts cannot share code, so shared parts are joined as text:
        a file that defines a local function goes before the one that calls it.
        """
        folder = resources.files(package) / "lua"
        return cls("\n".join((folder / f"{name}.lua").read_text("utf-8") for name in names))


@dataclass(frozen=True)
class Durability:
    """How many replicas must confirm a write before it counts as done.

    ``replica_acks=0`` (the default, right for a single Redis) sends no WAIT.
    With Sentinel replicas, 1 means an acknowledged write survives the loss of
    the primary; `timeout` bounds how long a request waits for that.
    """

    replica_acks: int = 0
    timeout: timedelta = timedelta(milliseconds=500)

    @property
    def timeout_ms(self) -> int:
        """The timeout as WAIT takes it (whole ms, at least 1: WAIT 0 would block)."""
        return max(1, int(self.timeout.total_seconds() * 1000))


NO_WAIT = Durability()


# One RoundTrips per client, so its held connections are shared by every caller.
_ROUND_TRIPS: weakref.WeakKeyDictionary[redis.Redis, RoundTrips] = weakref.WeakKeyDictionary()


def round_trips(client: redis.Redis) -> RoundTrips:
    """The `RoundTrips` of `client` (made on first use)."""
    calls = _ROUND_TRIPS.get(client)
    if calls is None:
        calls = _ROUND_TRIPS.setdefault(client, RoundTrips(client))
    return calls


def run_script(
    client: redis.Redis,
    script: LuaScript,
    keys: list[Any],
    args: list[Any],
    *,
    durability: Durability = NO_WAIT,
) -> Any:
    """Run `script`; raise NotReplicated unless `durability.replica_acks`
    replicas confirm the write within its timeout.

    A write that is not confirmed stays on the primary (Redis cannot roll it
    back) but must not be reported as done: the caller answers 503. A primary
    that refuses the write outright (``min-replicas-to-write``: too few
    replicas in sync) raises WriteRefused; then nothing was written.
    """
    return evalsha(round_trips(client), script, keys, args, durability)


def evalsha(
    calls: RoundTrips, script: LuaScript, keys: list[Any], args: list[Any], durability: Durability
) -> Any:
    """`run_script` on the round trips of a client already at hand."""
    acks = durability.replica_acks
    for attempt in range(2):
        try:
            if not acks:
                return calls.call("EVALSHA", script.sha, len(keys), *keys, *args)
            command = ("EVALSHA", script.sha, len(keys), *keys, *args)
            reply, acked = calls.pipeline([command, ("WAIT", acks, durability.timeout_ms)])
            for answer in (reply, acked):
                if isinstance(answer, Exception):
                    raise answer
        except NoScriptError:
            if attempt:
                raise
            calls.call("SCRIPT", "LOAD", script.text)
            continue
        except ResponseError as exc:
            if refused_for_replicas(exc):
                raise WriteRefused(f"the primary refused the write: {exc}") from exc
            raise
        if acked < acks:
            raise NotReplicated(
                f"write reached {acked} of {acks} replica(s) within {durability.timeout_ms} ms"
            )
        return reply
    raise AssertionError("unreachable")
