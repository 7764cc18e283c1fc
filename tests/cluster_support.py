"""Running the real `shop-cluster` launcher from tests, in a temp workdir.

The launcher runs as a subprocess, exactly as a user runs it; `down` in a
`finally` stops every process it started, even when a test fails.
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

from shop.cluster import procs
from shop.cluster.loadgen import LoadReport

SCRIPT = Path(sys.executable).parent / "shop-cluster"

# Every simulated shopper logs in from 127.0.0.1: lift the per-address login
# throttle for the test cluster (the per-user one stays).
CLUSTER_ENV = {"SHOP_LOGIN_MAX_PER_IP": "10000"}


@dataclass
class Launcher:
    """`shop-cluster ... --workdir WORKDIR`, run as a subprocess."""

    workdir: Path
    port: int = 0
    env: dict[str, str] | None = None
    up_output: str = ""

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
        return f"http://{procs.LOOPBACK}:{self.port}"

    def up(
        self, replicas: int = 3, redis: str = "single", *options: str
    ) -> subprocess.CompletedProcess:
        self.port = self.port or procs.free_port()
        result = self.run(
            "up", "--replicas", str(replicas), "--port", str(self.port), "--redis", redis, *options
        )
        self.up_output = result.stdout
        return result

    def status(self) -> dict[str, Any]:
        return json.loads(self.run("status", "--json").stdout)

    def recorded_pids(self) -> set[int]:
        """Every pid the state file names (master processes and group leaders)."""
        state = json.loads((self.workdir / "state.json").read_text())
        procs_ = [
            state["nginx"],
            *state["replicas"],
            *([state["redis"]] if state.get("redis") else []),
            *state.get("redis_nodes", []),
            *state.get("sentinels", []),
        ]
        return {p["pid"] for p in procs_ if p["pid"]}


def leftovers(pids: set[int]) -> set[int]:
    """Processes still running among `pids` and in their process groups (gunicorn workers)."""
    alive = {pid for pid in pids if procs.pid_alive(pid)}
    for pid in pids:
        alive |= procs.group_pids(pid)
    return alive


@contextmanager
def running_cluster(
    workdir: Path, replicas: int = 3, redis: str = "single", *options: str
) -> Iterator[Launcher]:
    """A cluster started by the launcher; always `down` afterwards, then by pid if need be."""
    launcher = Launcher(workdir)
    seen: set[int] = set()
    try:
        launcher.up(replicas, redis, *options)
        yield launcher
    finally:
        if (workdir / "state.json").exists():
            seen = launcher.recorded_pids()
        launcher.run("down", check=False)
        for pid in leftovers(seen):  # only if `down` failed: never leave processes behind
            procs.stop_process(pid, timeout=5)


def assert_clean(report: LoadReport, at_least: int) -> None:
    """No request failed, every cart is exact, and the load was real (`at_least` requests)."""
    print(  # shown with -s: the numbers behind "zero failures"
        f"\n{report.shoppers} shoppers, {report.requests} requests in {report.seconds:.1f}s "
        f"({report.resent} resent after a connection reset), "
        f"{len(report.failures)} failed, carts match: {report.carts_match}, "
        f"served by: {dict(sorted(report.served_by.items()))}"
    )
    assert report.failures == [], f"{len(report.failures)} failed: {report.failures[:5]}"
    assert report.carts_match, report.mismatches[:3]
    assert report.requests >= at_least, report
