"""End to end: the real launcher starts redis-server, gunicorn replicas of the
real shop and nginx; replicas are killed, restarted and scaled under load.

One cluster serves the whole module; after each test it is put back as the
fixture promised (3 replicas, everything running and in nginx's rotation), so
the tests pass in any order. Load comes from the same simulated shoppers the
demo uses (shop.cluster.loadgen), and every wait is on what the load has done
(requests served so far, a replica answering), not on the clock.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cluster_support import (
    PROGRESS_TIMEOUT,
    Launcher,
    assert_clean,
    leftovers,
    restoring,
    running_cluster,
    served_by,
    wait_for_requests,
    wait_in_rotation,
    wait_serving,
)

from shop.cluster import procs
from shop.cluster.launcher import Cluster
from shop.cluster.loadgen import LoadGenerator, SimulatedShopper, plentiful

pytestmark = pytest.mark.cluster

REPLICAS = 3
LOAD_SHOPPERS = 8
# Upper bounds only: a test stops its load when it has seen what it needs.
LOAD_SECONDS = 120.0
LOAD_MAX_REQUESTS = 2000  # per shopper
# `kill` is SIGKILL of a process group and a wait until the group is gone: a
# fraction of a second. A kill that reached only the gunicorn master would
# wait for its workers to notice and drain (tens of seconds under load).
KILL_RETURNS_WITHIN = 3.0


def load(url: str) -> LoadGenerator:
    return LoadGenerator(url, LOAD_SHOPPERS, duration=LOAD_SECONDS, max_requests=LOAD_MAX_REQUESTS)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), replicas=REPLICAS) as launcher:
        yield launcher


@pytest.fixture(autouse=True)
def as_promised(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from restoring(request, "cluster", REPLICAS)


# ---------------------------------------------------------------------------
def test_status_names_every_process(cluster: Launcher) -> None:
    status = cluster.status()
    assert status["url"] == f"{cluster.url}/"
    assert [r["name"] for r in status["replicas"]] == ["shop-1", "shop-2", "shop-3"]
    for proc in [status["redis"], status["nginx"], *status["replicas"]]:
        assert proc["alive"] and proc["ready"], proc
        assert set(proc) >= {"name", "pid", "port", "alive", "ready"}


def test_consecutive_requests_are_served_by_every_replica(cluster: Launcher) -> None:
    assert set(served_by(cluster.url, 6)) == {"shop-1", "shop-2", "shop-3"}


def test_up_twice_is_refused_clearly(cluster: Launcher) -> None:
    result = cluster.run("up", "--port", str(procs.free_port()), check=False)
    assert result.returncode == 1
    assert "already running" in result.stderr and "Traceback" not in result.stderr


def test_a_killed_replica_loses_no_session_and_no_cart(cluster: Launcher) -> None:
    shopper = SimulatedShopper(cluster.url)
    shopper.sign_up()
    for product in plentiful(shopper.products(), 3):
        assert shopper.add(product["id"], 2)
    victim = shopper.last_served_by
    before = {r["name"]: r["pid"] for r in cluster.status()["replicas"]}
    served_by_victim = shopper.served_by[victim]

    cluster.run("kill", victim)

    assert not procs.pid_alive(before[victim])
    assert procs.group_pids(before[victim]) == set()  # its workers died with it
    for _ in range(6):  # every replica's turn comes, the dead one's too
        assert shopper.must("GET", "/api/me").json()["username"] == shopper.name
        assert shopper.cart() == dict(shopper.acknowledged)
    assert shopper.served_by[victim] == served_by_victim  # nginx went around it
    order = shopper.must("POST", "/api/checkout", expect=(201,)).json()
    assert order["order_id"]
    assert shopper.failures == []

    cluster.run("start", victim)
    wait_in_rotation(cluster.url, victim)


def test_no_request_fails_while_a_replica_is_killed_and_restarted_under_load(
    cluster: Launcher,
) -> None:
    # One add acknowledged before the kill, resent with its key after it.
    resender = SimulatedShopper(cluster.url)
    resender.sign_up()
    product = plentiful(resender.products(), 1)[0]["id"]
    add = {"product_id": product, "qty": 2}
    key = uuid.uuid4().hex
    first = resender.must("POST", "/api/cart/items", json=add, expect=(201,), key=key).json()

    with load(cluster.url) as shoppers:
        wait_for_requests(shoppers, 300, "before the kill")
        started = time.monotonic()
        killed = Cluster(cluster.workdir).kill("shop-2")  # in-process: times kill alone
        took = time.monotonic() - started
        # From the moment kill returns, shop-2 serves nothing: not one process
        # of its group is left, and its port refuses connections.
        assert procs.group_pids(killed.pid) == set()
        assert not procs.port_is_open(killed.port)
        assert took < KILL_RETURNS_WITHIN, f"kill took {took:.1f}s"
        # The same add, resent under load to whichever replicas nginx picks:
        # answered with the first result, counted once.
        for _ in range(REPLICAS):
            again = resender.must("POST", "/api/cart/items", json=add, expect=(201,), key=key)
            assert again.json() == first
        assert resender.cart() == {product: 2}
        wait_for_requests(shoppers, 300, "without shop-2")

        cluster.run("start", "shop-2")
        served_before_restart = shoppers.served_by()["shop-2"]
        procs.wait_until(  # nginx probes it again after fail_timeout (5 s)
            lambda: shoppers.served_by()["shop-2"] > served_before_restart,
            timeout=PROGRESS_TIMEOUT,
            what="shop-2 to serve the load again",
        )
        wait_for_requests(shoppers, 200, "with shop-2 back")
    report = shoppers.report()
    assert_clean(report, at_least=LOAD_SHOPPERS * 100)


def test_demo_on_a_running_cluster_tells_the_story_and_leaves_it_running(
    cluster: Launcher,
) -> None:
    result = cluster.run("demo")
    out = result.stdout
    for expected in ("Kill it", "still logged in as", "cart intact", "back in rotation"):
        assert expected in out
    assert re.search(r"failed requests\s+0\b", out)
    assert re.search(r"every cart == acknowledged adds\s+yes", out)
    assert "has been stopped" not in out
    assert all(r["alive"] and r["ready"] for r in cluster.status()["replicas"])


def test_scale_3_to_5_to_2_under_load_fails_no_request(cluster: Launcher) -> None:
    with load(cluster.url) as shoppers:
        wait_for_requests(shoppers, 200, "before scaling")
        cluster.run("scale", "5")
        names = [r["name"] for r in cluster.status()["replicas"]]
        assert names == [f"shop-{i}" for i in range(1, 6)]
        # Under load our probes are a random sample of nginx's round robin:
        # keep sampling (bounded) until both newcomers have answered one.
        for name in ("shop-4", "shop-5"):
            wait_in_rotation(cluster.url, name)
        removed = [r["pid"] for r in cluster.status()["replicas"][2:]]
        cluster.run("scale", "2")
        wait_for_requests(shoppers, 300, "after the scale-down")  # still under load
    report = shoppers.report()
    assert_clean(report, at_least=LOAD_SHOPPERS * 100)
    assert [r["name"] for r in cluster.status()["replicas"]] == ["shop-1", "shop-2"]
    assert leftovers(set(removed)) == set()
    assert set(served_by(cluster.url, 6)) == {"shop-1", "shop-2"}


def test_redis_restart_keeps_sessions_and_carts_and_the_outage_is_a_quick_503(
    cluster: Launcher,
) -> None:
    shopper = SimulatedShopper(cluster.url)
    shopper.sign_up()
    product = shopper.products()[0]["id"]
    assert shopper.add(product, 3)
    redis_pid = cluster.status()["redis"]["pid"]

    os.kill(redis_pid, signal.SIGTERM)  # a clean stop: Redis flushes its AOF
    procs.wait_until(lambda: not procs.pid_alive(redis_pid), timeout=15, what="redis to stop")

    for method, path in [("GET", "/api/me"), ("GET", "/api/cart"), ("POST", "/api/cart/items")]:
        started = time.monotonic()
        body = {"product_id": product, "qty": 1} if method == "POST" else None
        response = shopper.request(method, path, json=body, expect=(503,))
        assert response is not None, shopper.failures[-1]
        assert time.monotonic() - started < 3, "an outage must fail fast, not hang"
        assert response.json()["error"]
    assert not any(r["ready"] for r in cluster.status()["replicas"])

    cluster.run("start", "redis")
    wait_serving(cluster.url, what="the shop, Redis back,")
    assert shopper.must("GET", "/api/me").json()["username"] == shopper.name
    assert shopper.cart() == {product: 3}


# ---------------------------------------------------------------------------
def test_down_stops_every_process_it_started(tmp_path: Path) -> None:
    """On its own cluster, started over a stale state file, with a killed replica."""
    workdir = tmp_path / "c"
    workdir.mkdir()
    (workdir / "state.json").write_text(
        '{"version": 1, "port": 1, "boot_id": "another-boot", "replicas": [],'
        ' "redis": {"name": "redis", "port": 1, "pid": 1, "start_time": 1},'
        ' "nginx": {"name": "nginx", "port": 1, "pid": 1, "start_time": 1}}'
    )
    with running_cluster(workdir, replicas=2) as launcher:
        assert "stale state file" in launcher.up_output
        pids = launcher.recorded_pids()
        workers = set().union(*(procs.group_pids(pid) for pid in pids))
        assert len(workers) > len(pids)  # gunicorn workers, nginx workers
        launcher.run("kill", "shop-1")
        result = launcher.run("down")
        assert "Stopped" in result.stdout
    assert leftovers(pids | workers) == set()
    assert not (workdir / "state.json").exists()


def test_foreground_streams_prefixed_logs_and_sigterm_stops_everything(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path / "fg", port=procs.free_port())
    argv, env = launcher.command(
        "up", "--replicas", "1", "--port", str(launcher.port), "--foreground"
    )
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    pids: set[int] = set()
    try:
        procs.wait_until(
            lambda: proc.poll() is not None or launcher.status()["nginx"]["ready"],
            timeout=60,
            what="the foreground cluster",
        )
        assert proc.poll() is None, proc.communicate()[0]
        requests.get(f"{launcher.url}/api/products", timeout=10).raise_for_status()
        pids = launcher.recorded_pids()
        pids |= set().union(*(procs.group_pids(pid) for pid in pids))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        launcher.run("down", check=False)
    assert proc.returncode == 0, out
    assert re.search(r"shop-1 \| .*/api/products", out)
    assert re.search(r"nginx-access \| .*upstream=127\.0\.0\.1:\d+ ustatus=200", out)
    assert "Stopped." in out
    assert leftovers(pids) == set()
