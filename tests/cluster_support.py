"""Running the real `shop-cluster` launcher from tests, in a temp workdir.

The launcher runs as a subprocess, exactly as a user runs it; `down` in a
`finally` stops every process it started, even when a test fails. A module
that shares one cluster between its tests puts it back as promised after each
(`restore`), so no test depends on the ones before it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import failure_report
import pytest
import requests

from shop.cluster import chart, netns, procs
from shop.cluster.loadgen import LoadGenerator, LoadReport
from shop.cluster.state import State
from shop.cluster.timeline import EventLog, Sample, Timeline

SCRIPT = Path(sys.executable).parent / "shop-cluster"
# Where tests that measure a failure leave their timeline charts.
TEST_OUTPUT = Path(__file__).resolve().parent.parent / "test-output"

# Every simulated shopper logs in from 127.0.0.1: lift the per-address login
# throttle for the test cluster (the per-user one stays).
CLUSTER_ENV = {"SHOP_LOGIN_MAX_PER_IP": "10000"}
# nginx sets a failed replica aside for fail_timeout (5 s) before it tries it
# again; four times that covers a loaded machine.
ROTATION_TIMEOUT = 20.0
# How long a load may take to make the requests a test waits for: about 200
# requests/s here, a tenth of that on a machine shared with other suites.
PROGRESS_TIMEOUT = 60.0


@dataclass
class Launcher:
    """`shop-cluster ... --workdir WORKDIR`, run as a subprocess."""

    workdir: Path
    port: int = 0
    env: dict[str, str] | None = None
    up_output: str = ""
    hosts: bool = False  # `up --hosts`: the shop is at the virtual IP, on port 80
    served_url: str = ""  # the URL `status` gives once it is up

    def command(self, *args: str) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of `shop-cluster ARGS --workdir WORKDIR`."""
        argv = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "shop.cluster.cli"]
        env = {**os.environ, **CLUSTER_ENV, "COLUMNS": "200", **(self.env or {})}
        return [*argv, *args, "--workdir", str(self.workdir)], env

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        argv, env = self.command(*args)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError(
                f"shop-cluster {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    @property
    def url(self) -> str:
        return self.served_url or f"http://{procs.LOOPBACK}:{self.port}"

    def up(
        self, replicas: int = 3, redis: str = "single", *options: str
    ) -> subprocess.CompletedProcess:
        if self.hosts:
            where = ["--hosts"]
        else:
            self.port = self.port or procs.free_port()
            where = ["--port", str(self.port)]
        result = self.run("up", "--replicas", str(replicas), *where, "--redis", redis, *options)
        self.up_output = result.stdout
        if self.hosts:
            self.served_url = self.status()["url"].rstrip("/")
        return result

    def status(self) -> dict[str, Any]:
        return json.loads(self.run("status", "--json").stdout)

    @property
    def redis_password(self) -> str:
        """What every Redis node and Sentinel of the cluster asks of a client."""
        return (self.workdir / "redis_password").read_text().strip()

    def recorded_state(self) -> State:
        """The state file as the launcher wrote it."""
        return State.from_json((self.workdir / "state.json").read_text())

    def recorded_pids(self) -> set[int]:
        """Every pid the state file names (master processes and group leaders)."""
        state = json.loads((self.workdir / "state.json").read_text())
        procs_ = [
            state["nginx"],
            *state["replicas"],
            *([state["redis"]] if state.get("redis") else []),
            *state.get("redis_nodes", []),
            *state.get("sentinels", []),
            *state.get("nginx_peers", []),
            *state.get("keepalived", []),
            *([state["autoscaler"]] if state.get("autoscaler") else []),
            *state.get("watchdogs", []),
        ]
        return {p["pid"] for p in procs_ if p["pid"]}

    def diagnostics(self) -> str:
        """The cluster as a failed test's report shows it (tests/failure_report.py):
        `status`; with an HA store each node's INFO replication and each
        Sentinel's view; the tail of every log in the workdir."""
        parts = [failure_report.section("shop-cluster status", self._status_text)]
        if (self.workdir / "state.json").exists():
            state = self.recorded_state()
            state.redis_password = self.redis_password
            if state.redis_nodes:
                parts.append(
                    failure_report.section("the HA store", lambda: failure_report.ha_store(state))
                )
        logs = [
            self.workdir / "events.jsonl",
            *sorted(self.workdir.glob("*/redis.log")),
            *sorted(self.workdir.glob("*/sentinel.log")),
            *sorted((self.workdir / "logs").glob("*.log")),
        ]
        parts.append(failure_report.section("logs", lambda: failure_report.logs(logs)))
        return "\n".join(parts)

    def _status_text(self) -> str:
        result = self.run("status", check=False, timeout=30)
        return result.stdout + result.stderr


def hosts_module_marks() -> list[pytest.MarkDecorator]:
    """The marks of a module whose clusters run on hosts (network namespaces):
    skipped, saying why, where namespaces cannot be made here (not root)."""
    why = netns.unavailable()
    return [
        pytest.mark.cluster,
        pytest.mark.hosts,
        pytest.mark.skipif(why is not None, reason=f"hosts mode: {why}"),
    ]


def leftovers(pids: set[int]) -> set[int]:
    """Processes still running among `pids` and in their process groups (gunicorn workers)."""
    alive = {pid for pid in pids if procs.pid_alive(pid)}
    for pid in pids:
        alive |= procs.group_pids(pid)
    return alive


@contextmanager
def running_cluster(
    workdir: Path, replicas: int = 3, redis: str = "single", *options: str, hosts: bool = False
) -> Iterator[Launcher]:
    """A cluster started by the launcher (`hosts`: `up --hosts`); always `down`
    afterwards, then by pid (and for hosts, by name) if need be."""
    launcher = Launcher(workdir, hosts=hosts)
    seen: set[int] = set()
    try:
        try:
            launcher.up(replicas, redis, *options)
        except Exception:
            print(launcher.diagnostics())  # shown with the failure: why `up` failed
            raise
        yield launcher
    finally:
        if (workdir / "state.json").exists():
            seen = launcher.recorded_pids()
        launcher.run("down", check=False)
        for pid in leftovers(seen):  # only if `down` failed: never leave processes behind
            procs.stop_process(pid, timeout=5)
        if hosts:
            netns.sweep(netns.network_id(workdir))  # likewise for its namespaces and links


def assert_clean(report: LoadReport, at_least: int) -> None:
    """No request failed, every cart is exact, and the load was real (`at_least` requests)."""
    print(  # shown with -s: the numbers behind "zero failures"
        f"\n{report.shoppers} shoppers, {report.requests} requests in {report.seconds:.1f}s "
        f"({report.resent} resent after a connection reset), "
        f"{len(report.failures)} failed, carts match: {report.carts_match}, "
        f"{report.lost_carts} lost carts, {report.forced_logins} forced re-logins, "
        f"served by: {dict(sorted(report.served_by.items()))}"
    )
    assert report.failures == [], f"{len(report.failures)} failed: {report.failures[:5]}"
    assert report.carts_match, report.mismatches[:3]
    assert report.forced_logins == 0, f"{report.forced_logins} shoppers were logged out"
    assert report.requests >= at_least, report


def slowest_since(report: LoadReport, since: float) -> Sample:
    """The slowest request still running at `since` (wall clock) or started after it:
    what a failure at `since` cost. The sign-ups before it hash passwords on a busy
    machine, slow for other reasons."""
    return max((s for s in report.samples if s.at + s.seconds >= since), key=lambda s: s.seconds)


def event_time(launcher: Launcher, kind: str, target: str) -> float:
    """When the launcher journalled the last `kind` of `target` (wall clock)."""
    events = EventLog(launcher.workdir / "events.jsonl").read()
    return [e for e in events if e.kind == kind and e.target == target][-1].at


def save_timeline(
    launcher: Launcher, load: LoadGenerator, report: LoadReport, name: str, title: str
) -> str:
    """The run's timeline chart (requests and the journal's events) in test-output/;
    return the line that says where it is."""
    events = EventLog(launcher.workdir / "events.jsonl").read(since=load.started_wall)
    timeline = Timeline(report.samples, events, title=title)
    return chart.save(timeline, TEST_OUTPUT, name).note


def served_by(url: str, count: int) -> list[str]:
    """The replicas that answered `count` consecutive requests through nginx."""
    with requests.Session() as http:
        return [
            http.get(f"{url}/api/products", timeout=10).headers["X-Served-By"] for _ in range(count)
        ]


def wait_in_rotation(url: str, name: str, timeout: float = ROTATION_TIMEOUT) -> None:
    """Until nginx sends requests to `name` again (after its fail_timeout)."""
    procs.wait_until(lambda: name in served_by(url, 4), timeout=timeout, what=f"{name} in rotation")


def wait_serving(url: str, timeout: float = ROTATION_TIMEOUT, what: str = "the shop") -> None:
    """Until the shop answers a page of products through nginx."""
    procs.wait_until(
        lambda: requests.get(f"{url}/api/products", timeout=5).status_code == 200,
        timeout=timeout,
        what=f"{what} to serve",
    )


def wait_for_requests(load: LoadGenerator, more: int, what: str = "") -> None:
    """Until `load` has made `more` requests from now."""
    target = load.requests_so_far() + more
    procs.wait_until(
        lambda: load.requests_so_far() >= target,
        timeout=PROGRESS_TIMEOUT,
        what=f"{more} more requests of the load {what}".strip(),
    )


def restore(launcher: Launcher, replicas: int) -> None:
    """Put a shared cluster back as its fixture promised: shop-1..`replicas`, every
    process running (none frozen), every replica in nginx's rotation. Cheap when
    nothing changed."""
    status = launcher.status()
    wanted = [f"shop-{i}" for i in range(1, replicas + 1)]
    if [r["name"] for r in status["replicas"]] != wanted:
        launcher.run("scale", str(replicas))  # shrinks to, or regrows, shop-1..N
        status = launcher.status()
    redis = status["redis"]
    stores = [*redis["nodes"], *redis["sentinels"]] if redis.get("mode") == "ha" else [redis]
    everything = [*stores, status["nginx"], *status["replicas"], *status.get("watchdogs", [])]
    for name in [p["name"] for p in everything if p.get("frozen")]:
        launcher.run("thaw", name)
    for name in [p["name"] for p in everything if not p["alive"]]:
        launcher.run("start", name)
    wait_serving(launcher.url)
    for name in wanted:
        wait_in_rotation(launcher.url, name)


def restoring(request: pytest.FixtureRequest, fixture: str, replicas: int) -> Iterator[None]:
    """The body of an autouse fixture: after each test that used the shared
    cluster `fixture`, `restore` it (`yield from restoring(request, ...)`)."""
    yield
    if fixture in request.fixturenames:
        restore(request.getfixturevalue(fixture), replicas)
