"""Running the shop's Lua scripts atomically, each in the idempotency envelope.

Every change that must be atomic across replicas is one script in
``shop/lua/``. Each is followed by ``idempotent.lua``, so any of them can be
made idempotent by passing an :class:`~shop.idempotency.IdempotencyClaim`: the
check of the key, the change and the storing of its result happen in one
atomic step, and a replica dying half-way cannot leave a claim without its
result.

:func:`run` is the one choke point of every domain write (cart, checkout,
registration, idempotency records), so it is also where durability is
enforced: with ``store.durability.replica_acks`` > 0 (``SHOP_REPLICA_ACKS``),
the script and a ``WAIT`` go out in one pipeline (still one round trip) and a
write that too few replicas have confirmed in time raises
``sessionstore.NotReplicated``, which the shop answers with a fast 503 +
Retry-After, exactly as sessionstore does for sessions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from sessionstore import LuaScript, NotReplicated, run_script

from . import keys
from .errors import ShopError
from .idempotency import IdempotencyClaim
from .shopstore import ShopStore

_NO_KEY = keys.idempotency("none", "none")  # a placeholder KEYS[1]; never read or written


@dataclass(frozen=True)
class Outcome:
    """What a script did: its result, and whether it was replayed from a stored record."""

    result: dict[str, Any]
    replayed: bool
    fingerprint: str


@cache
def _script(name: str) -> LuaScript:
    """``shop/lua/<name>.lua`` (defines apply) followed by the idempotency envelope."""
    return LuaScript.load("shop", name, "idempotent")


def run(
    store: ShopStore,
    name: str,
    keys_: list[str],
    args: list[Any],
    claim: IdempotencyClaim | None = None,
) -> Outcome:
    """Run script `name` (``shop/lua/<name>.lua``) atomically, optionally under `claim`.

    A replay of a claim whose stored fingerprint differs (same key, other
    request) raises a 422 and changes nothing.

    Uses EVALSHA and loads the script only when Redis does not know it (after
    a restart or a failover), so a normal call is one round trip, WAIT included.

    When fewer replicas than ``store.durability`` asks for confirm the write
    in time, raises :class:`sessionstore.NotReplicated`. The write then stays
    on the primary (Redis cannot roll it back) but is not acknowledged: a
    retry with the same Idempotency-Key replays it, and that replay WAITs again.
    """
    script = _script(name)
    record_key = claim.record_key if claim else _NO_KEY
    fingerprint = claim.fingerprint if claim else ""
    argv = [fingerprint, claim.ttl_seconds if claim else 0, *args]
    all_keys = [record_key, *keys_]
    try:
        kind, record = run_script(store.client, script, all_keys, argv, durability=store.durability)
    except NotReplicated:
        store.observer.not_replicated(name)
        raise
    return finish(store, name, kind, record, claim)


def finish(
    store: ShopStore, name: str, kind: str, record: str, claim: IdempotencyClaim | None
) -> Outcome:
    """The Outcome of script `name` from its record, as ``idempotent.lua`` returns it
    (`kind` ``fresh`` or ``replay``, `record` the JSON ``{fp, result}``), told to
    ``store.observer``. Also for a change made outside Redis with the same
    contract (shop/replicamemory.py), so both answer a reused key alike."""
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
    store.observer.script_ran(name, outcome.result, outcome.replayed)
    return outcome
