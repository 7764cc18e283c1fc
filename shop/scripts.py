"""Running the shop's Lua scripts, each wrapped in the idempotency envelope.

Every change that must be atomic across replicas is one script in
``shop/lua/``. Each is spliced into ``idempotent.lua``, so any of them can be
made idempotent by passing an :class:`IdempotencyClaim`: the check of the key,
the change and the storing of its result happen in one atomic step, and a
replica dying half-way cannot leave a claim without its result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError

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
class _Script:
    text: str
    sha: str


@cache
def _script(name: str) -> _Script:
    lua = resources.files("shop") / "lua"
    envelope = (lua / "idempotent.lua").read_text(encoding="utf-8")
    body = (lua / f"{name}.lua").read_text(encoding="utf-8")
    text = envelope.replace("\n@BODY@\n", "\n" + body + "\n", 1)
    return _Script(
        text=text, sha=hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()
    )


def run(
    client: redis.Redis,
    name: str,
    keys_: list[str],
    args: list[Any],
    claim: IdempotencyClaim | None = None,
) -> Outcome:
    """Run script `name` (``shop/lua/<name>.lua``) atomically, optionally under `claim`.

    A replay of a claim whose stored fingerprint differs (same key, other
    request) raises a 422 and changes nothing.

    Uses EVALSHA and loads the script only when Redis does not know it (after
    a restart), so a normal call is one round trip.
    """
    script = _script(name)
    record_key = claim.record_key if claim else _NO_KEY
    fingerprint = claim.fingerprint if claim else ""
    argv = [fingerprint, RECORD_TTL_SECONDS, *args]
    all_keys = [record_key, *keys_]
    try:
        kind, record = client.evalsha(script.sha, len(all_keys), *all_keys, *argv)
    except NoScriptError:
        client.script_load(script.text)
        kind, record = client.evalsha(script.sha, len(all_keys), *all_keys, *argv)
    kind = kind.decode() if isinstance(kind, bytes) else kind
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
