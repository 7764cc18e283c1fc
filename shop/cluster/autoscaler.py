"""The autoscaler: a process of the cluster that follows the load with `scale`.

`shop-cluster up --autoscale MIN:MAX` or `shop-cluster autoscale MIN:MAX`
starts it as `python -m shop.cluster.autoscaler WORKDIR`, recorded in the
state file like every other process: it outlives the command that started it,
`status` shows it, `autoscale off` and `down` stop it. Every half second it
reads how many requests are in flight through nginx (its stub_status);
scalepolicy.py decides; and it scales with the launcher's own `scale`, under
the workdir's lock like any command: new replicas join nginx once ready,
leaving ones are taken out of nginx before SIGTERM, so in-flight requests
finish. nginx is re-rendered and reloaded only there, by the one mechanism
every command uses.

Every decision, with its reason and how long the scale took, goes to its log
(WORKDIR/logs/autoscaler.log) and to Redis (shop/scalelog.py), whence the
cluster page (/cluster) and `status` show it. If Redis cannot be reached it
goes on scaling: the signal comes from nginx, and its log keeps the decisions.

Stopping (SIGTERM) lets a scale it has begun finish (new replicas ready, or
leaving ones drained) and then exits; that is why `down` and `autoscale off`
stop it before they take the workdir's lock.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from sessionstore import redis_from_url
from shop import scalelog

from . import nginxconf, procs, status, store
from .procs import ClusterError
from .scalepolicy import SAMPLE_INTERVAL, Controller, Decision, Policy
from .state import Proc, State, Workdir

log = logging.getLogger("autoscaler")

NAME = "autoscaler"
# How long it may take to start and publish its first reading: a Python start
# that imports the launcher, a few seconds on a loaded 2-core machine.
START_TIMEOUT = 30.0
# A probe of nginx's counters on loopback answers in a millisecond; a second
# means nginx is stuck, and the round goes on without that sample.
PROBE_TIMEOUT = 1.0
# Redis is only where decisions are shown: fail fast and go on scaling.
REDIS_TIMEOUT = 0.5

Scale = Callable[[int], object]


def in_flight(state: State) -> float | None:
    """Requests in flight through the cluster's nginx (every load balancer's summed);
    None if none answers."""
    counts = [
        status.stub_status(nginxconf.url(nginx, nginxconf.STATUS_PATH), PROBE_TIMEOUT).get(
            "in_flight"
        )
        for nginx in state.balancers()
        if nginx.alive()
    ]
    answered = [c for c in counts if c is not None]
    return float(sum(answered)) if answered else None


class Autoscaler:
    """One cluster's control loop: sample, decide (scalepolicy.Controller), scale, record."""

    def __init__(self, workdir: Workdir, policy: Policy, scale: Scale) -> None:
        self.workdir = workdir
        self.policy = policy
        self.scale = scale
        self.controller = Controller(policy)
        self.pid = os.getpid()
        self._redis: redis.Redis | None = None
        self._redis_failing = False

    # ------------------------------------------------------------------ loop
    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set (SIGTERM) or the cluster is gone."""
        self.record({"action": "on", "reason": f"autoscaling on: {self.policy.describe()}"})
        while not stop.is_set():
            started = time.monotonic()
            state = self.current_state()
            if state is None:
                break
            try:
                self.round(state)
            except Exception:  # a control loop outlives a bad round; its log has the trace
                log.exception("this round failed; going on")
            stop.wait(max(0.0, SAMPLE_INTERVAL - (time.monotonic() - started)))
        self.record({"action": "off", "reason": "autoscaling off: the replicas stay as they are"})
        self._with_redis(scalelog.withdraw)

    def current_state(self) -> State | None:
        """The cluster now; None when it is gone (`down`) or another autoscaler runs it."""
        try:
            state = self.workdir.load()
        except ClusterError as exc:  # written by rename, so never half a file: damaged
            log.warning("%s: stopping", exc)
            return None
        if state is None:
            log.info("the cluster is gone (no state file): stopping")
            return None
        mine = state.autoscaler
        if mine is not None and mine.pid not in (None, self.pid) and mine.alive():
            log.info("another autoscaler (pid %s) runs this cluster: stopping", mine.pid)
            return None
        return state

    def round(self, state: State) -> None:
        """One sample, one decision, and the scale it calls for (if any)."""
        now = time.monotonic()
        sample = in_flight(state)
        if sample is not None:
            self.controller.observe(now, sample)
        replicas = len(state.replicas)
        decision = self.controller.step(now, replicas)
        self.publish(now, replicas)
        if decision is not None:
            self.act(decision)

    def act(self, decision: Decision) -> None:
        """Scale as decided, through the launcher's graceful `scale`; record how it went.
        Meanwhile (a replica's start can take many seconds) the reading is kept
        fresh, saying what is under way, so no reader takes the autoscaler for gone."""
        at, started = time.time(), time.monotonic()
        entry: dict[str, Any] = {
            "at": at,
            "action": decision.action,
            "from": decision.replicas,
            "to": decision.to,
            "reason": decision.reason,
            "in_flight": decision.in_flight,
        }
        done = threading.Event()
        doing = f"scaling {decision.action} {decision.replicas} → {decision.to}"

        def keep_publishing() -> None:
            while not done.wait(SAMPLE_INTERVAL * 2):
                elapsed = time.monotonic() - started
                self.publish(time.monotonic(), decision.replicas, f"{doing} ({elapsed:.0f} s)")

        publisher = threading.Thread(target=keep_publishing, name="publisher", daemon=True)
        publisher.start()
        try:
            self.scale(decision.to)
        except (ClusterError, procs.MissingBinary) as exc:
            entry.update(action="error", reason=f"{decision.action} to {decision.to} failed: {exc}")
        finally:
            done.set()
            publisher.join()
        entry["took"] = round(time.monotonic() - started, 2)
        # Failed or not, wait for fresh samples (and the cooldown) before the next try.
        self.controller.changed(time.monotonic())
        self.record(entry)

    # ------------------------------------------------------------ reporting
    def publish(self, now: float, replicas: int, outlook: str | None = None) -> None:
        """What it reads and aims for now, for `status` and the cluster page."""
        reading = self.controller.reading(now)
        self._with_redis(
            scalelog.publish,
            {
                "pid": self.pid,
                "updated": time.time(),
                "policy": self.policy.to_dict(),
                "replicas": replicas,
                "in_flight": None if reading is None else round(reading, 2),
                "per_replica": None if reading is None else round(reading / replicas, 2),
                "outlook": outlook or self.controller.outlook(now, replicas),
            },
        )

    def record(self, entry: dict[str, Any]) -> None:
        """A decision: one line in the log, one entry in Redis."""
        entry = {"at": time.time(), **entry}
        took = f" (took {entry['took']:.1f} s)" if entry.get("took") is not None else ""
        headline = scalelog.headline(entry)
        log.info("%s: %s%s", headline, entry.get("reason", ""), took)
        self._with_redis(scalelog.record, entry)

    def _with_redis(self, write: Callable[..., None], *args: Any) -> None:
        """Write to Redis if it answers; otherwise say so once and go on."""
        try:
            if self._redis is None:
                state = self.workdir.load()
                if state is None:
                    return
                self._redis = redis_from_url(
                    store.url(state),
                    socket_timeout=REDIS_TIMEOUT,
                    socket_connect_timeout=REDIS_TIMEOUT,
                    retries=0,
                    decode_responses=True,
                )
            write(self._redis, *args)
        except (redis.RedisError, OSError, ClusterError) as exc:
            if not self._redis_failing:
                log.warning(
                    "cannot write to Redis (%s): decisions in this log only, until it is back", exc
                )
            self._redis_failing = True
            return
        if self._redis_failing:
            log.info("Redis answers again")
        self._redis_failing = False


# --------------------------------------------------------- for the launcher
def plan() -> Proc:
    """The autoscaler's record in the state file (it listens on no port)."""
    return Proc(NAME, 0)


def argv(workdir: Workdir) -> list[str]:
    return [sys.executable, "-m", "shop.cluster.autoscaler", str(workdir.path)]


def spawn(workdir: Workdir, proc: Proc, state: State) -> None:
    """Start the autoscaler of `state` (its policy is `state.autoscale`); return once
    it has published its first reading."""
    log_path = workdir.log(proc)
    popen = procs.spawn(
        argv(workdir), log_path=log_path, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    proc.record(popen)

    def started() -> bool:
        if popen.poll() is not None:
            tail = procs.tail(log_path)
            raise ClusterError(f"the autoscaler exited at start; see {log_path}:\n{tail}")
        reading = status.cluster_autoscale_record(state)["reading"]
        return bool(reading and reading.get("pid") == popen.pid)

    procs.wait_for(started, f"the autoscaler to start (log: {log_path})", timeout=START_TIMEOUT)


# ---------------------------------------------------------------- the process
def main(args: Sequence[str] | None = None) -> int:
    """`python -m shop.cluster.autoscaler WORKDIR`: run until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m shop.cluster.autoscaler",
        description="Scale the replicas of the cluster in WORKDIR on the requests in flight "
        "through its nginx, within the range its state file records (`shop-cluster autoscale`).",
    )
    parser.add_argument("workdir", type=Path, help="the cluster's work directory")
    options = parser.parse_args(args)
    stop = procs.run_as_cluster_process()
    # The launcher imports this module to start the process: import it only here.
    from .launcher import Cluster

    cluster = Cluster(options.workdir)
    state = cluster.workdir.load()
    if state is None or state.autoscale is None:
        print(f"error: no autoscaling range recorded in {cluster.workdir}", file=sys.stderr)
        return 1
    autoscaler = Autoscaler(
        cluster.workdir, state.autoscale, lambda count: cluster.scale(count, by_autoscaler=True)
    )
    autoscaler.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
