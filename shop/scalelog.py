"""The autoscaler's record in Redis: what it reads now, and every decision it made.

The autoscaler (a process of the launcher, `shop-cluster autoscale MIN:MAX`)
writes it; the cluster page, on any replica, and `shop-cluster status` read
it. It is in Redis for the reason the heartbeats are: the one place all of
them reach. Key shapes are documented in shop/keys.py.

This module does not import Flask: the launcher's autoscaler and `status` use it.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from . import keys

# The reading is rewritten every half second: ten missed rounds and it lapses,
# which is how a reader tells that the autoscaler is off or gone.
READING_TTL_SECONDS = 5
DECISIONS_KEPT = 50
DECISIONS_TTL_SECONDS = 24 * 3600
DECISIONS_SHOWN = 10  # what the page and `status` list, newest first

# The actions a decision can have, as the page and `status` name them.
ACTIONS = ("on", "up", "down", "error", "off")


def publish(client: redis.Redis, reading: dict[str, Any]) -> None:
    """What the autoscaler reads and aims for now (JSON; expires unless rewritten)."""
    client.set(keys.cluster_autoscaler(), json.dumps(reading), ex=READING_TTL_SECONDS)


def withdraw(client: redis.Redis) -> None:
    """The autoscaler stops: readers see "off" at once rather than after the TTL."""
    client.delete(keys.cluster_autoscaler())


def record(client: redis.Redis, decision: dict[str, Any]) -> None:
    """Add a decision (JSON) at the head of the list, keeping the newest `DECISIONS_KEPT`."""
    key = keys.cluster_autoscaler_decisions()
    pipe = client.pipeline(transaction=True)
    pipe.lpush(key, json.dumps(decision))
    pipe.ltrim(key, 0, DECISIONS_KEPT - 1)
    pipe.expire(key, DECISIONS_TTL_SECONDS)
    pipe.execute()


def read(client: redis.Redis, limit: int = DECISIONS_SHOWN) -> dict[str, Any]:
    """``{"reading": {...} or None, "decisions": [newest first]}`` in one round trip,
    each with a ``summary`` for people."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.cluster_autoscaler())
    pipe.lrange(keys.cluster_autoscaler_decisions(), 0, limit - 1)
    raw_reading, raw_decisions = pipe.execute()
    reading = _json(raw_reading)
    if reading is not None:
        reading["summary"] = summary(reading)
    decisions = [d for d in (_json(raw) for raw in raw_decisions) if d is not None]
    for decision in decisions:
        decision["summary"] = headline(decision)
    return {"reading": reading, "decisions": decisions}


def summary(reading: dict[str, Any]) -> str:
    """One line: the range and target, the replicas now, the load and the outlook."""
    policy = reading.get("policy") or {}
    replicas = reading.get("replicas")
    text = (
        f"{replicas} replica{'' if replicas == 1 else 's'} (range {policy.get('minimum')} to "
        f"{policy.get('maximum')}, target {policy.get('target', 0):g} requests in flight "
        f"per replica)"
    )
    in_flight = reading.get("in_flight")
    if in_flight is not None:
        text += f"; now {in_flight:.1f} in flight, {reading.get('per_replica', 0):.1f} per replica"
    outlook = reading.get("outlook")
    return f"{text}; {outlook}" if outlook else text


def headline(decision: dict[str, Any]) -> str:
    """ "up 1 → 2", "down 3 → 2", or the action alone (on, off, error)."""
    action = decision.get("action", "?")
    if action in ("up", "down"):
        return f"{action} {decision.get('from')} → {decision.get('to')}"
    return str(action)


def _json(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
