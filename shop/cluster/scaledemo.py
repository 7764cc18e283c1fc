"""`shop-cluster demo --autoscale`: the crowd comes, the replicas follow it, and go.

The tutorial's example of elasticity is a big shopping day: when the crowd
comes, add servers; when it leaves, remove them, automatically. This tells it
on the local cluster with its autoscaler (autoscaler.py), range 1 to 3:

1. one shopper keeps the shop busy: the autoscaler reads the load and keeps 1;
2. a crowd of shoppers arrives: each decision is printed as it is made, with
   its reason, and a narrated shopper shows which replicas serve;
3. the crowd leaves: the replicas are drained and stopped, one at a time;
4. what the shoppers met (failed requests, carts), and every decision.

The target is 2 requests in flight per replica, not the default 4: simulated
shoppers spend time of their own between two requests (16 of them kept 6 to 8
in flight on two shared cores), and the crowd should look like one.

With a cluster running, it uses that one (not with --hosts), scaled to 1
first, and puts back afterwards what it found (the replicas, and autoscaling
on or off); its login throttle (30 log-ins per source in 5 minutes) may then
turn some of the crowd away, which the summary shows. With none, it starts
one, with that throttle lifted (every shopper logs in from 127.0.0.1), and
stops it at the end.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from shop import scalelog

from . import procs, status
from .demo import Narrator, background_load, summary
from .launcher import Cluster
from .loadgen import LoadGenerator, LoadReport, RequestFailed, SimulatedShopper
from .procs import ClusterError
from .scalepolicy import Policy

POLICY = Policy(1, 3, target=2.0)
CROWD = 16
# They arrive in groups: sixteen sign-ups at once (each a password hash, slow by
# design and holding its worker) would keep one replica from answering anyone
# within nginx's bounds (3 s, 6 s for a login) on two shared cores.
CROWD_GROUP = 4
LOGINS_PER_SOURCE = 10_000  # for a cluster the demo starts (see run_autoscale_demo)
# Bounds: each phase ends as soon as it has shown what it must. A reading takes
# 3 s; growing takes two readings and two replica starts (5 s each here, 20 s
# on a busy machine); coming back takes a 15-s window and 10 s between steps.
READING_TIMEOUT = 30.0
GROW_TIMEOUT = 60.0
BACK_TIMEOUT = 2 * (POLICY.down_window + (POLICY.maximum - 1) * (POLICY.cooldown + 5))
CROWD_MAX_REQUESTS = 20_000  # per shopper: the duration bounds it first
POLL = 0.5  # how often the autoscaler's record is read (it writes twice a second)


class DecisionFeed:
    """Prints the autoscaler's decisions made since it was created, as they come."""

    def __init__(self, cluster: Cluster, narrator: Narrator) -> None:
        self.cluster, self.n = cluster, narrator
        self.since = time.time()
        self.seen: list[dict[str, Any]] = []

    def record(self) -> dict[str, Any]:
        return status.cluster_autoscale_record(self.cluster.workdir.running())

    def poll(self) -> int:
        """Print the new decisions; return the replicas the latest one left (or, before
        any, the cluster's)."""
        fresh = [d for d in reversed(self.record()["decisions"]) if d["at"] > self.since]
        for decision in fresh[len(self.seen) :]:
            took = f" [dim](took {decision['took']:.1f} s)[/]" if decision.get("took") else ""
            at = decision["at"] - self.since
            self.n.say(
                f"[dim]{at:5.1f} s[/]  [bold]{decision['summary']}[/]: {decision['reason']}{took}"
            )
            self.seen.append(decision)
        scaled = [d for d in self.seen if d["action"] in ("up", "down")]
        return scaled[-1]["to"] if scaled else len(self.cluster.workdir.running().replicas)

    def until(self, done: Callable[[int], bool], timeout: float, what: str) -> bool:
        """Print decisions until `done(replicas)` or the timeout; whether it came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(self.poll()):
                return True
            time.sleep(POLL)
        self.n.say(f"[red]no {what} within {timeout:.0f} s[/]")
        return False

    def reading(self) -> str:
        """The autoscaler's reading, once it has one of the cluster as it is now
        (a few seconds after a change; bounded)."""
        current: dict[str, Any] = {}

        def measured() -> bool:
            current.update(self.record()["reading"] or {})
            return current.get("in_flight") is not None

        with contextlib.suppress(TimeoutError):  # no reading is said as such, below
            procs.wait_until(measured, timeout=READING_TIMEOUT, interval=POLL)
        return scalelog.summary(current) if current else "no reading (is Redis up?)"


def run_autoscale_demo(cluster: Cluster, console: Console, *, port: int | None = None) -> int:
    """Tell the story; return 0 if the replicas grew and came back and no shopper
    met a failure."""
    existing = cluster.workdir.load()
    started_here = existing is None or not existing.any_alive()
    found: tuple[Policy | None, int] | None = None
    if started_here:
        # Every shopper logs in from 127.0.0.1: lift the per-source login throttle
        # (30 in 5 minutes) for this cluster of the demo's own, as the tests do.
        os.environ.setdefault("SHOP_LOGIN_MAX_PER_IP", str(LOGINS_PER_SOURCE))
        with console.status(f"No cluster in {cluster.workdir}: starting 1 replica…"):
            cluster.up(replicas=POLICY.minimum, port=port, autoscale=POLICY)
    else:
        state = cluster.workdir.running()
        if state.network is not None:
            raise ClusterError("demo --autoscale runs on loopback clusters, not with --hosts")
        found = (state.autoscale, len(state.replicas))
        with console.status("Scaling the running cluster to 1 replica for the demo…"):
            cluster.autoscale(None)
            cluster.scale(POLICY.minimum)
            cluster.autoscale(POLICY)
    try:
        return _story(cluster, console)
    except RequestFailed as exc:
        raise ClusterError(f"the demo's shopper met an error: {exc}")
    finally:
        if started_here:
            cluster.down()
            console.print("The cluster this demo started has been stopped.")
        elif found is not None:
            _put_back(cluster, console, *found)


def _put_back(cluster: Cluster, console: Console, policy: Policy | None, replicas: int) -> None:
    with console.status("Putting the cluster back as the demo found it…"):
        cluster.autoscale(policy)
        if policy is None:
            cluster.scale(replicas)
    was = f"autoscaling {policy.describe()}" if policy else f"{replicas} replicas, no autoscaling"
    console.print(f"The cluster is back as the demo found it: {was}.")


def _story(cluster: Cluster, console: Console) -> int:
    url = cluster.workdir.running().url.rstrip("/")
    n = Narrator(console, SimulatedShopper(url))
    feed = DecisionFeed(cluster, n)
    console.print(
        f"[bold]Autoscaling demo[/] at [bold cyan]{url}/[/]: {POLICY.describe()}.\n"
        f"Open [bold cyan]{url}/cluster[/] in a browser and watch its Autoscaling section."
    )
    n.step("One shopper: the autoscaler reads the load and keeps one replica")
    with background_load(url, 1) as steady:
        n.say(f"the autoscaler: {feed.reading()}")
        _served(n)

        n.step(f"The crowd comes: {CROWD} shoppers more, {CROWD_GROUP} at a time, no pauses")
        with contextlib.ExitStack() as arrivals:
            crowd = []
            for _ in range(CROWD // CROWD_GROUP):
                # Each group signs up (password hashing, slow by design) before the next comes.
                crowd.append(arrivals.enter_context(_crowd_group(url)))
                feed.poll()
            grew = feed.until(lambda count: count == POLICY.maximum, GROW_TIMEOUT, "growth")
            grew = grew or feed.poll() > POLICY.minimum
            n.say(f"the autoscaler: {feed.reading()}")
            _served(n)
        crowd_report = LoadReport.combined([group.report() for group in crowd])

        n.step("The crowd leaves: replicas drained from nginx and stopped, one at a time")
        back = feed.until(lambda count: count == POLICY.minimum, BACK_TIMEOUT, "return to 1")
        n.say(f"the autoscaler: {feed.reading()}")
        _served(n)
    steady_report = steady.report()

    console.print(summary(steady_report, title="the steady shopper"))
    console.print(summary(crowd_report, title="the crowd"))
    console.print(_decisions(feed.seen, feed.since))
    ok = grew and back and steady_report.ok and crowd_report.ok and not n.shopper.failures
    return 0 if ok else 1


def _crowd_group(url: str) -> LoadGenerator:
    return LoadGenerator(
        url, CROWD_GROUP, duration=GROW_TIMEOUT + 60, max_requests=CROWD_MAX_REQUESTS, think=0.0
    )


def _served(n: Narrator, requests: int = 4) -> None:
    """A few requests of the narrated shopper: which replicas serve now."""
    for _ in range(requests):
        n.call("GET", "/api/cart")


def _decisions(decisions: list[dict[str, Any]], start: float) -> Table:
    """Every decision of the demo, its time from the demo's start."""
    table = Table(title="the autoscaler's decisions", title_justify="left")
    for column in ("at", "decision", "why", "took"):
        table.add_column(column, justify="right" if column in ("at", "took") else "left")
    for d in decisions:
        took = f"{d['took']:.1f} s" if d.get("took") is not None else "-"
        table.add_row(f"{d['at'] - start:.1f} s", d["summary"], d["reason"], took)
    return table
