"""Running the shop's Lua scripts, each wrapped in the idempotency envelope.

Every change that must be atomic across replicas is one script in
``shop/lua/``. Each is followed by ``idempotent.lua``, so any of them can be
made idempotent by passing an :class:`IdempotencyClaim`: the check of the key,
the change and the storing of its result happen in one atomic step, and a
replica dying half-way cannot leave a claim without its result.

:func:`run` is the one choke point of every domain write (cart, checkout,
registration, idempotency records), so it is also where durability is
enforced: with ``SHOP_REPLICA_ACKS`` > 0, the script and a ``WAIT`` go out in
one pipeline (still one round trip) and a write that too few replicas have
confirmed in time raises ``sessionstore.NotReplicated``, which the shop answers
with a fast 503 + Retry-After, exactly as sessionstore does for sessions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from flask import current_app, has_app_context

from sessionstore import LuaScript, NotReplicated, run_script

from . import keys, metrics
from .errors import ShopError

RECORD_TTL_SECONDS = 24 * 3600
_NO_KEY = keys.idempotency("none", "none")  # a placeholder KEYS[1]; never read or written


@dataclass(frozen=True)
class IdempotencyClaim:
    """Where a request's first result is kept, and what the request looked like."""

    record_key: str
    fingerprint: str


@dataclass(frozen=True)
class Outcome:
    """What a script did: its result, and whether it was replayed from a stored record."""

    result: dict[str, Any]
    replayed: bool
    fingerprint: str


@dataclass(frozen=True)
class Durability:
    """How many replicas must confirm a write before the shop acknowledges it.

    ``replica_acks=0`` (the default, and right for a single Redis) skips WAIT.
    With a Sentinel setup, 1 means an acknowledged write survives the loss
    of the primary; `timeout_ms` bounds how long a request waits for that.
    """

    replica_acks: int = 0
    timeout_ms: int = 500


NO_WAIT = Durability()


def _current_durability() -> Durability:
    """The app's setting when called inside a request, else no WAIT (scripts, tests)."""
    if has_app_context():
        return current_app.extensions["shop"].durability
    return NO_WAIT


@cache
def _script(name: str) -> LuaScript:
    """``shop/lua/<name>.lua`` (defines apply) followed by the idempotency envelope."""
    return LuaScript.load("shop", name, "idempotent")


def run(
    client: redis.Redis,
    name: str,
    keys_: list[str],
    args: list[Any],
    claim: IdempotencyClaim | None = None,
    durability: Durability | None = None,
) -> Outcome:
    """Run script `name` (``shop/lua/<name>.lua``) atomically, optionally under `claim`.

    A replay of a claim whose stored fingerprint differs (same key, other
    request) raises a 422 and changes nothing.

    Uses EVALSHA and loads the script only when Redis does not know it (after
    a restart or a failover), so a normal call is one round trip, WAIT included.

    `durability` defaults to the app's (``SHOP_REPLICA_ACKS``); when fewer
    replicas than asked confirm the write in time, raises
    :class:`sessionstore.NotReplicated`. The write then stays on the primary
    (Redis cannot roll it back) but is not acknowledged: a retry with the same
    Idempotency-Key replays it, and that replay WAITs again.
    """
    script = _script(name)
    record_key = claim.record_key if claim else _NO_KEY
    fingerprint = claim.fingerprint if claim else ""
    argv = [fingerprint, RECORD_TTL_SECONDS, *args]
    all_keys = [record_key, *keys_]
    durability = durability or _current_durability()
    try:
        kind, record = run_script(
            client,
            script,
            all_keys,
            argv,
            replica_acks=durability.replica_acks,
            ack_timeout_ms=durability.timeout_ms,
        )
    except NotReplicated:
        metrics.record_not_replicated()
        raise
    data = json.loads(record)
    if claim and kind == "replay" and data.get("fp") != claim.fingerprint:
        raise ShopError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different request.",
        )
    result = data.get("result")
    # cjson encodes an empty Lua table as {}; no script returns an empty result.
    outcome = Outcome(
        result=result if isinstance(result, dict) else {},
        replayed=kind == "replay",
        fingerprint=data.get("fp", ""),
    )
    metrics.record_script(name, outcome.result, outcome.replayed)
    return outcome
