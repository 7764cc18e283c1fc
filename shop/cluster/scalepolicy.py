"""The autoscaler's control law: from requests in flight to a number of replicas.

No I/O here (autoscaler.py samples, acts and records); this module only
decides, so the rules can be read, and tested, on their own.

**The signal: requests in flight through nginx** (its stub_status "Writing",
less the probe's own request), sampled every half second. Why not the others:

- CPU: on two shared cores a single replica (two workers) already saturates
  the machine, and the other processes on it (other clusters, the tests) show
  up in it too; CPU would say "more" at any load and "less" never.
- Requests per second: it stops growing when the replicas are saturated (the
  queue grows instead), so it under-reads overload, and its target depends on
  the request mix (a checkout costs many reads).
- Latency: it also rises when Redis or the machine is slow, and adding
  replicas on a CPU-bound machine does not bring it down, so it would scale to
  the maximum and stay there.
- Concurrency is what a gthread replica runs out of: each has workers x
  threads slots (2 x 4 = 8 by default); a request beyond them waits. By
  Little's law it is throughput x latency, so it rises with either, and it is
  measured where the clients are (nginx), queueing included. Knative's
  autoscaler uses it for the same reason.

**The rules** (every value a field of `Policy`):

- reading: the mean of the samples of the last `window` seconds (3 s).
- up: when the reading per replica is above `target` (4 of the 8 slots),
  straight to ceil(reading / target) replicas, at most double at once (a new
  replica's start costs CPU the serving ones need) and at most `maximum`. The
  samples are then discarded, so the next decision reads the new cluster.
- down: one replica at a time, when for the last `down_window` seconds (15 s)
  every reading, shared by one replica fewer, stays at most `band` x target
  (70 %); and the last change is `cooldown` seconds (10 s) old. The band is the
  hysteresis: with one replica fewer the load must still sit well below the
  level that scales up, or the next reading would undo the scale-down.
- bounds: outside [minimum, maximum] (the range was just changed), straight in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

# A sane ceiling for `autoscale MIN:MAX`: every replica is a gunicorn master and
# two workers (about 110 MB) on this one machine.
MAX_REPLICAS = 32
SAMPLE_INTERVAL = 0.5  # seconds between two samples of nginx's counters (autoscaler.py)


@dataclass(frozen=True)
class Policy:
    """What the autoscaler aims for; saved in the state file, shown by `status`."""

    minimum: int
    maximum: int
    target: float = 4.0  # requests in flight per replica: half its 2 x 4 gthread slots
    window: float = 3.0  # seconds of samples averaged into one reading
    down_window: float = 15.0  # seconds of low readings before a scale-down
    cooldown: float = 10.0  # seconds after any change before a scale-down
    band: float = 0.7  # a scale-down must leave each replica at most band x target

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            got = f"{self.minimum}:{self.maximum}"
            raise ValueError(f"MIN:MAX needs 1 <= MIN <= MAX (got {got})")
        if self.maximum > MAX_REPLICAS:
            raise ValueError(f"MAX may be at most {MAX_REPLICAS} replicas on one machine")
        if not self.target > 0:
            raise ValueError("the target must be more than 0 requests in flight per replica")

    @classmethod
    def parse(cls, text: str, **options: Any) -> Policy:
        """`Policy` from "MIN:MAX" as the command line gives it (ValueError if malformed)."""
        low, sep, high = text.partition(":")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit():
            raise ValueError(f"expected MIN:MAX, two whole numbers such as 1:4 (got {text!r})")
        return cls(int(low), int(high), **options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        return cls(**data)

    def describe(self) -> str:
        """One line for people: "1 to 4 replicas, target 4 requests in flight per replica"."""
        return (
            f"{self.minimum} to {self.maximum} replicas, "
            f"target {self.target:g} requests in flight per replica"
        )


@dataclass(frozen=True)
class Decision:
    """A change of the number of replicas, and why."""

    action: str  # "up" or "down"
    replicas: int  # how many now
    to: int  # how many wanted
    reason: str
    in_flight: float | None  # the reading that decided it (None: a bound did)


class Controller:
    """Feed it samples (`observe`) and ask it each round (`step`); tell it when the
    cluster changed (`changed`). Times are time.monotonic() seconds."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.samples: deque[tuple[float, float]] = deque()  # (at, requests in flight)
        self.readings: deque[tuple[float, float]] = deque()  # (at, mean of a window)
        self.last_change = -math.inf
        self.started: float | None = None  # the first sample ever
        self.filling: float | None = None  # the first sample since the last change

    def observe(self, at: float, in_flight: float) -> None:
        if self.started is None:
            self.started = at
        if self.filling is None:
            self.filling = at
        self.samples.append((at, max(0.0, in_flight)))
        while self.samples and self.samples[0][0] < at - self.policy.window:
            self.samples.popleft()

    def reading(self, now: float) -> float | None:
        """The mean of the samples of the last `window` seconds; None until samples
        have been taken for a whole window since the last change (or when nginx
        has not answered for that long)."""
        if self.filling is None or now - self.filling < self.policy.window:
            return None
        recent = [value for at, value in self.samples if at >= now - self.policy.window]
        return sum(recent) / len(recent) if recent else None

    def changed(self, at: float) -> None:
        """The cluster was just scaled: what was sampled before describes another
        cluster; a scale-down must wait `cooldown`."""
        self.samples.clear()
        self.filling = None
        self.last_change = at

    def step(self, now: float, replicas: int) -> Decision | None:
        """What to do now with `replicas` replicas, if anything."""
        policy = self.policy
        if replicas < policy.minimum:
            why = f"below the minimum of {policy.minimum}"
            return Decision("up", replicas, policy.minimum, why, None)
        if replicas > policy.maximum:
            why = f"above the maximum of {policy.maximum}"
            return Decision("down", replicas, policy.maximum, why, None)
        current = self.reading(now)
        if current is None:
            return None
        self.readings.append((now, current))
        while self.readings and self.readings[0][0] < now - policy.down_window:
            self.readings.popleft()
        wanted = min(policy.maximum, math.ceil(current / policy.target))
        if wanted > replicas:
            to = min(wanted, 2 * replicas)
            per = current / replicas
            more = f"; at most double at once, so {to}" if to < wanted else ""
            return Decision(
                "up", replicas, to,
                f"{current:.1f} requests in flight over {policy.window:g} s, {per:.1f} per "
                f"replica > target {policy.target:g}: {wanted} replicas needed{more}",
                current,
            )  # fmt: skip
        if replicas > policy.minimum and self._calm(now, replicas):
            peak = max(value for _, value in self.readings)
            after = peak / (replicas - 1)
            return Decision(
                "down", replicas, replicas - 1,
                f"at most {peak:.1f} requests in flight for {policy.down_window:g} s: "
                f"{after:.1f} per replica on {replicas - 1}, under {policy.band:.0%} of "
                f"target {policy.target:g}",
                current,
            )  # fmt: skip
        return None

    def _calm(self, now: float, replicas: int) -> bool:
        """Whether one replica fewer would have carried every reading of the last
        `down_window` seconds at most `band` x target, with a whole window seen and
        the cooldown over."""
        policy = self.policy
        if now - self.last_change < policy.cooldown:
            return False
        if self.started is None or now - self.started < policy.down_window:
            return False
        limit = policy.band * policy.target * (replicas - 1)
        return all(value <= limit for _, value in self.readings)

    def outlook(self, now: float, replicas: int) -> str:
        """What the autoscaler is waiting for, in words (for `status` and the page)."""
        policy = self.policy
        current = self.reading(now)
        if current is None:
            return "measuring (a reading needs a whole window of samples since the last change)"
        if replicas > policy.minimum:
            if now - self.last_change < policy.cooldown:
                left = policy.cooldown - (now - self.last_change)
                return f"steady; no scale-down for {left:.0f} s more (cooldown)"
            limit = policy.band * policy.target * (replicas - 1)
            if current <= limit:
                return (
                    f"low: one replica fewer once it has stayed at most {limit:.1f} "
                    f"in flight for {policy.down_window:g} s"
                )
        if replicas >= policy.maximum and current > policy.target * replicas:
            return f"at the maximum of {policy.maximum}: above target, cannot grow"
        return "steady: within target"
