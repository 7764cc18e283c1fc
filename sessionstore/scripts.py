"""Running a Lua script in one round trip, optionally waiting for replicas.

Shared by sessionstore and by applications that keep their own scripts (the
shop does): EVALSHA, loading the script only when Redis does not know it
(after a restart, or on a replica promoted by a failover, since scripts are
replicated as their effects), and, when asked, a WAIT for replicas pipelined
with it, so a durable write still costs one round trip.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError

from .errors import NotReplicated


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


def run_script(
    client: redis.Redis,
    script: LuaScript,
    keys: list[Any],
    args: list[Any],
    *,
    replica_acks: int = 0,
    ack_timeout_ms: int = 500,
) -> Any:
    """Run `script`; with `replica_acks`, raise NotReplicated unless that many
    replicas confirm the write within `ack_timeout_ms`.

    A write that is not confirmed stays on the primary (Redis cannot roll it
    back) but must not be reported as done: the caller answers 503.
    """
    for attempt in range(2):
        try:
            if not replica_acks:
                return client.evalsha(script.sha, len(keys), *keys, *args)
            pipe = client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.wait(replica_acks, ack_timeout_ms)
            reply, acked = pipe.execute()
        except NoScriptError:
            if attempt:
                raise
            client.script_load(script.text)
            continue
        if acked < replica_acks:
            raise NotReplicated(
                f"write reached {acked} of {replica_acks} replica(s) within {ack_timeout_ms} ms"
            )
        return reply
    raise AssertionError("unreachable")
