"""Autoscaling end to end: `up --autoscale 1:3`, then a load ramp (low, high, low)
through nginx.

What it proves: the replicas stay at MIN under the low load, grow above MIN
during the high load and do not shrink while it lasts, and come back to MIN
after it, through the graceful `scale` (removed replicas' processes are gone),
and no request failed: the simulated shoppers the demo uses shop through all
three phases (every request answered, every cart exact at the end), and wrk's
high load had no error of any kind. The decisions the autoscaler logged, and
what the test saw, are printed with their times (`pytest -s`).

The load is shaped so that the machine's speed cannot blur it. The low load is
2 shoppers, so at most 2 requests are ever in flight: under the 2.8 that lets
2 replicas shrink to 1 (70 % of the target 4) and the 4 that would scale up,
however slow a shared machine makes each request. The high load is wrk with 16
connections, each always waiting for its next answer: 16 in flight, 16 per
replica at MIN, 8 at 2 (twice the target), and at MAX still 5.3, above the
target; in all, nearly three times the 5.6 that would let 3 replicas shrink to
2, however fast or slow the machine is. (Simulated shoppers cannot make it: each
spends its own Python time between two requests, so 16 of them kept only 6 to
8 requests in flight here.)
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import Launcher, assert_clean, leftovers, running_cluster, served_by

from bench.measure import wrk_argv, wrk_summary
from shop.cluster import procs
from shop.cluster.loadgen import LoadGenerator
from shop.cluster.scalepolicy import Policy
from shop.cluster.status import autoscale_record

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        shutil.which("wrk") is None, reason="wrk is not installed: sudo apt-get install wrk"
    ),
]

MIN, MAX = 1, 3
POLICY = Policy(MIN, MAX)  # the defaults `up --autoscale 1:3` runs with
LOW_SHOPPERS = 2
LOW_THINK = 0.05  # seconds between a low shopper's requests
# Not more: with 24, the slowest requests of a busy machine (load 12 from other
# suites) passed nginx's 3-s bound and were answered 503.
HIGH_CONNECTIONS = 16
# wrk sends `Connection: close`: a new connection per request, so a reload of
# nginx (every scale) never closes a kept-alive connection under a request wrk
# has just sent; wrk, unlike a browser or the shoppers, would not resend it.
HIGH_HEADERS = ["Connection: close"]
HIGH_TIMEOUT = 15.0  # wrk's bound on one request, the shoppers' read timeout
# Bounds, not durations: each phase ends as soon as it has shown what it must.
# Low, before: a reading of the low load (3 s) and 100 requests served.
LOW_FIRST_REQUESTS = 100
# High: two scale-ups, each a 3-s reading plus a replica start (5 s here, 20 s
# on a loaded machine).
HIGH_DEADLINE = 60.0
# Held at MAX under the high load for longer than a scale-down could take to
# come (cooldown, a whole stabilisation window): none may come.
HOLD_AT_MAX = POLICY.down_window + 2
# Back to MIN: a 15-s stabilisation window, then one replica at a time 10 s
# apart (2 of them), each drained; twice that on a loaded machine.
BACK_TO_MIN_DEADLINE = 2 * (POLICY.down_window + (MAX - MIN) * (POLICY.cooldown + 5))
LOAD_BOUND_SECONDS = 300.0  # the loads stop themselves at this bound, whatever happens
LOAD_MAX_REQUESTS = 20_000  # per shopper, likewise
HIGH_BOUND = HIGH_DEADLINE + HOLD_AT_MAX + 30  # wrk's own bound, if the test cannot stop it


# Without the watchdog beside nginx: it probes /readyz with a 0.5 s timeout and
# takes a replica out after two misses, and a replica merely saturated by this
# test's load (16 to 24 requests in flight for 8 threads) misses them too. It then
# takes healthy replicas out in turn and aborts their connections: with 3 fixed
# replicas, no autoscaler and the same load for 20 s, 11 such decisions and 141
# answers 503 here. That is the watchdog's to tell apart (busy from hung), not
# this test's; until it does, this test keeps to what it proves.
NO_WATCHDOG = "--no-watchdog"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    workdir = tmp_path_factory.mktemp("autoscale")
    options = ("--autoscale", f"{MIN}:{MAX}", NO_WATCHDOG)
    with running_cluster(workdir, MIN, "single", *options) as launcher:
        yield launcher


class ReplicaWatch:
    """Polls the state file (cheap, no subprocess) and keeps every change of the
    replica set with its time, and every replica pid ever seen."""

    def __init__(self, launcher: Launcher, t0: float) -> None:
        self.launcher, self.t0 = launcher, t0
        self.changes: list[tuple[float, list[str]]] = []
        self.pids: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            try:
                replicas = self.launcher.recorded_state().replicas
            except (OSError, ValueError):
                continue
            names = [r.name for r in replicas]
            self.pids |= {r.pid for r in replicas if r.pid}
            if not self.changes or self.changes[-1][1] != names:
                self.changes.append((time.time() - self.t0, names))

    def count(self) -> int:
        return len(self.changes[-1][1]) if self.changes else 0

    def counts_between(self, start: float, end: float) -> set[int]:
        """The replica counts seen from `start` to `end` (seconds since t0)."""
        seen = {len(names) for at, names in self.changes if start <= at <= end}
        before = [len(names) for at, names in self.changes if at < start]
        return seen | set(before[-1:])

    def __enter__(self) -> ReplicaWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def low_load(url: str) -> LoadGenerator:
    return LoadGenerator(
        url,
        LOW_SHOPPERS,
        duration=LOAD_BOUND_SECONDS,
        max_requests=LOAD_MAX_REQUESTS,
        think=LOW_THINK,
    )


class HighLoad:
    """wrk keeping HIGH_CONNECTIONS requests in flight until stopped (SIGINT, which
    still prints its summary) or HIGH_BOUND seconds; `summary` once stopped."""

    def __init__(self, url: str) -> None:
        argv = wrk_argv(
            f"{url}/api/products",
            "get.lua",
            duration=HIGH_BOUND,
            connections=HIGH_CONNECTIONS,
            timeout=HIGH_TIMEOUT,
            headers=HIGH_HEADERS,
        )
        pipe = subprocess.PIPE
        self.proc = subprocess.Popen(argv, stdout=pipe, stderr=pipe, text=True)
        self.summary: dict[str, int] = {}

    def __enter__(self) -> HighLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=HIGH_TIMEOUT + 15)
        except subprocess.TimeoutExpired:
            procs.stop_process(self.proc.pid, group=False)
            raise
        if exc[0] is None:  # a failure inside stays the failure reported
            self.summary = wrk_summary(out, err, self.proc.returncode)


@pytest.mark.timeout(420)  # a cluster start, the bounds above, and the checks of every cart
def test_replicas_follow_a_low_high_low_load_ramp_without_a_failed_request(
    cluster: Launcher,
) -> None:
    t0 = time.time()
    phases: dict[str, float] = {}
    with ReplicaWatch(cluster, t0) as watch, low_load(cluster.url) as low:
        # Low: the autoscaler reads the low load and keeps MIN.
        phases["low"] = time.time() - t0
        target = low.requests_so_far() + LOW_FIRST_REQUESTS
        procs.wait_until(
            lambda: low.requests_so_far() >= target and reading(cluster) is not None,
            timeout=60,
            what="the low load to be served and read by the autoscaler",
        )
        low_reading = reading(cluster)

        # High: wrk's connections on top.
        phases["high"] = time.time() - t0
        with HighLoad(cluster.url) as high:
            procs.wait_until(
                lambda: watch.count() == MAX, timeout=HIGH_DEADLINE, what=f"{MAX} replicas"
            )
            phases["at max"] = time.time() - t0
            held_until = time.monotonic() + HOLD_AT_MAX
            procs.wait_until(  # the high load goes on at MAX for a while: no scale-down
                lambda: time.monotonic() >= held_until, timeout=HOLD_AT_MAX + 5
            )
            high_reading = reading(cluster)
        phases["low again"] = time.time() - t0

        # Low again: back to MIN.
        procs.wait_until(
            lambda: watch.count() == MIN, timeout=BACK_TO_MIN_DEADLINE, what=f"{MIN} replica"
        )
        phases["at min"] = time.time() - t0
        only_min = set(served_by(cluster.url, 6))
    phases["end"] = time.time() - t0
    low_report = low.report()

    status = cluster.status()
    decisions = [d for d in reversed(status["autoscale"]["decisions"]) if d["at"] >= t0]
    print_timeline(t0, phases, watch, decisions, low_reading, high_reading)

    # Zero failed requests throughout, every cart exact, a real load.
    assert_clean(low_report, at_least=LOW_FIRST_REQUESTS)
    wrk = high.summary
    print(
        f"wrk: {wrk['requests']} requests in {wrk['duration_us'] / 1e6:.1f}s, "
        f"p50 {wrk['p50_us'] / 1000:.0f} ms, p99 {wrk['p99_us'] / 1000:.0f} ms, "
        f"max {wrk['max_us'] / 1000:.0f} ms, {wrk['errors']} errors {wrk}"
    )
    assert wrk["errors"] == 0, wrk  # connect, read, write, timeouts, non-2xx/3xx statuses
    assert wrk["requests"] >= 10 * HIGH_CONNECTIONS, wrk
    # MIN under the low load, more during the high load, never fewer while it lasted.
    assert watch.counts_between(phases["low"], phases["high"]) == {MIN}
    assert max(watch.counts_between(phases["high"], phases["low again"])) > MIN
    assert watch.counts_between(phases["at max"], phases["low again"]) == {MAX}
    assert only_min == {f"shop-{i}" for i in range(1, MIN + 1)}
    # The autoscaler decided all of it, each with its reason, and scaled gracefully.
    ups = [d for d in decisions if d["action"] == "up"]
    downs = [d for d in decisions if d["action"] == "down"]
    assert ups and all(phases["high"] <= d["at"] - t0 <= phases["at max"] for d in ups)
    assert downs and all(d["at"] - t0 >= phases["low again"] for d in downs)
    assert [d["to"] for d in downs][-1] == MIN
    assert all("in flight" in d["reason"] for d in ups + downs)
    assert not [d for d in decisions if d["action"] == "error"]
    final = {r.pid for r in cluster.recorded_state().replicas}
    assert leftovers(watch.pids - final) == set()  # removed replicas: every process gone
    # `status` shows the autoscaler, what it reads, and its decisions.
    scaler = status["autoscale"]
    assert scaler["enabled"] and scaler["process"]["alive"] and scaler["process"]["ready"]
    assert scaler["policy"]["minimum"] == MIN and scaler["policy"]["maximum"] == MAX
    assert scaler["reading"]["replicas"] == MIN
    table = cluster.run("status").stdout
    assert "autoscaler" in table and f"down 2 → {MIN}" in table


def record(cluster: Launcher) -> dict:
    """The autoscaler's record in Redis, as `status` reads it (in-process: cheap)."""
    return autoscale_record(cluster.recorded_state().redis, cluster.redis_password)


def reading(cluster: Launcher) -> dict | None:
    """The autoscaler's reading now, if it has a whole window of samples."""
    current = record(cluster)["reading"]
    return current if current and current["in_flight"] is not None else None


def print_timeline(
    t0: float,
    phases: dict[str, float],
    watch: ReplicaWatch,
    decisions: list[dict],
    low_reading: dict | None,
    high_reading: dict | None,
) -> None:
    """The run, second by second, as the README quotes it (shown with -s)."""
    print(f"\nlow: {LOW_SHOPPERS} shoppers throughout; high: wrk, {HIGH_CONNECTIONS} connections")
    print(f"\nautoscale {MIN}:{MAX}, target {POLICY.target:g} in flight per replica")
    for name, at in phases.items():
        print(f"  {at:6.1f} s  phase: {name}")
    for at, names in watch.changes:
        print(f"  {at:6.1f} s  replicas: {', '.join(names)}")
    for d in decisions:
        took = f" (took {d['took']:.1f} s)" if d.get("took") is not None else ""
        print(f"  {d['at'] - t0:6.1f} s  decision {d['summary']}: {d['reason']}{took}")
    for name, current in (("low", low_reading), ("high", high_reading)):
        if current:
            print(f"  reading under the {name} load: {current['summary']}")


def test_scale_is_refused_while_autoscaling_and_off_leaves_the_replicas(
    cluster: Launcher, tmp_path: Path
) -> None:
    refused = cluster.run("scale", "2", check=False)
    assert refused.returncode == 1 and "autoscaling is on" in refused.stderr
    assert "Traceback" not in refused.stderr
    before = [r.name for r in cluster.recorded_state().replicas]
    scaler_pid = cluster.recorded_state().autoscaler.pid
    try:
        out = cluster.run("autoscale", "off").stdout
        assert "off" in out
        state = cluster.recorded_state()
        assert state.autoscaler is None and state.autoscale is None
        assert not procs.pid_alive(scaler_pid)
        assert [r.name for r in state.replicas] == before  # left as they were
        status = cluster.status()["autoscale"]
        assert not status["enabled"] and status["reading"] is None
        assert status["decisions"][0]["action"] == "off"
        # A range that starts above the replicas brings them up at once.
        cluster.run("autoscale", "2:3")
        procs.wait_until(
            lambda: record(cluster)["decisions"][0]["action"] != "on",
            timeout=60,
            what="the autoscaler's first decision",
        )
        first = record(cluster)["decisions"][0]
        assert (first["action"], first["to"]) == ("up", 2), first
        assert first["reason"] == "below the minimum of 2"
        assert len(cluster.recorded_state().replicas) == 2
    finally:
        cluster.run("autoscale", f"{MIN}:{MAX}", check=False)  # as the fixture promised


@pytest.mark.timeout(360)  # the demo's own bounds (a reading, growth, return) and its summary
def test_demo_autoscale_tells_the_crowd_story_and_puts_the_cluster_back(
    cluster: Launcher,
) -> None:
    """On a running cluster: a crowd of shoppers comes and goes, the replicas follow
    it, each decision is printed with its reason, no shopper meets a failure, and
    the cluster is left as the demo found it (autoscaling 1:3, target 4)."""
    result = cluster.run("demo", "--autoscale", check=False, timeout=340)
    out = result.stdout
    print(out)
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"up 1 → 2: [\d.]+ requests in flight over 3 s", out)
    assert re.search(r"down 2 → 1: at most [\d.]+ requests in flight for 15 s", out)
    assert len(re.findall(r"failed requests\s+0\b", out)) == 2  # the steady shopper, the crowd
    assert len(re.findall(r"every cart == acknowledged adds\s+yes", out)) == 2
    assert "back as the demo found it" in out
    state = cluster.recorded_state()
    assert state.autoscale == POLICY and state.autoscaler.alive()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["autoscale", "3:1"], "1 <= MIN <= MAX"),
        (["autoscale", "two:four"], "expected MIN:MAX"),
        (["autoscale", "1:99"], "at most 32"),
        (["autoscale", "1:3", "--target", "0"], "above 0"),
        (["up", "--autoscale", "1:3", "--replicas", "5"], "outside --autoscale 1:3"),
        (["up", "--hosts", "--autoscale", "1:3"], "not available with --hosts"),
    ],
)
def test_bad_ranges_are_refused_clearly_and_start_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    launcher = Launcher(tmp_path / "c")
    port = ["--port", str(procs.free_port())] if args[0] == "up" else []
    result = launcher.run(*args, *port, check=False)
    assert result.returncode in (1, 2)  # 2: argparse's usage error
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "c" / "state.json").exists()
