"""End to end, HA store: `shop-cluster up --redis ha`, shoppers under load, Redis
nodes SIGKILLed through the launcher, Sentinel fails over, nothing acknowledged
is lost.

The default topology is a primary and two replicas (SHOP_REPLICA_ACKS=1: a
write counts once a replica has it), and the nodes refuse writes while no
replica is in sync (min-replicas-to-write 1):

- lose the primary: Sentinel promotes a replica, the other replica follows it
  and acknowledges writes, so writes are taken again within seconds while the
  old primary stays dead;
- lose the promoted primary too: the last node is promoted with no replica to
  acknowledge writes, so the shop serves reads and answers writes with fast
  503s that change nothing, until a node is started again.

`--redis-replicas 1` is still possible: after a failover writes are refused
(fast 503) until the old primary is back as a replica.

After each test a shared cluster is put back as promised: every process
running, every replica in sync, writes taken (whichever node is primary).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import requests
from cluster_support import Launcher, restoring, running_cluster, wait_for_requests

from shop.cluster import procs
from shop.cluster.loadgen import FailureRecord, LoadGenerator, LoadReport, SimulatedShopper

pytestmark = pytest.mark.cluster

SHOPPERS = 6
REPLICAS = 2
FAST = 3.0  # no failed request may take longer than this (seconds)
WRITES_BACK = 10.0  # issue 12: writes acknowledged again this soon after losing the primary
# A failover takes about 4 s here (down-after 2 s, ha.DOWN_AFTER_MS, then an
# election and a promotion); several times that means it is not happening.
FAILOVER_TIMEOUT = 30.0
# How long the shop is watched with two nodes dead: long enough for many
# requests of each kind, short enough to keep the test quick.
DEGRADED_SECONDS = 5.0


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """`up --redis ha` with nothing else: the default topology."""
    with running_cluster(tmp_path_factory.mktemp("ha"), replicas=REPLICAS, redis="ha") as launcher:
        yield launcher


@pytest.fixture(scope="module")
def one_replica_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    workdir = tmp_path_factory.mktemp("ha1")
    with running_cluster(workdir, REPLICAS, "ha", "--redis-replicas", "1") as launcher:
        yield launcher


@pytest.fixture(autouse=True)
def as_promised(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test on a shared cluster: every process back, replicas in sync."""
    for fixture in ("ha_cluster", "one_replica_cluster"):
        if fixture in request.fixturenames:
            yield from restoring(request, fixture, REPLICAS)
            settled(request.getfixturevalue(fixture))
            return
    yield


def settled(launcher: Launcher) -> None:
    """Wait until one node is primary, every other one its replica in sync, and
    the shop takes writes again.

    Which node is primary is left as it is: with two replicas a Sentinel-run
    failover back picks whichever replica it prefers, so it cannot promise one.
    """

    def in_sync() -> bool:
        view = redis_view(launcher)
        replicas = [n for n in view["nodes"] if n["name"] != view["primary"]]
        return (
            view["primary"] is not None
            and all(n["role"] == "replica" and n.get("in_sync") for n in replicas)
            and requests.get(f"{launcher.url}/readyz", timeout=5).status_code == 200
        )

    procs.wait_until(in_sync, timeout=FAILOVER_TIMEOUT, interval=0.2, what="replicas in sync")


def redis_view(launcher: Launcher) -> dict:
    return launcher.status()["redis"]


def node_port(launcher: Launcher, name: str) -> int:
    return next(n["port"] for n in redis_view(launcher)["nodes"] if n["name"] == name)


def store_on_the_page(launcher: Launcher) -> dict:
    """The store as the shop's cluster page sees it (/api/cluster, through nginx)."""
    return requests.get(f"{launcher.url}/api/cluster", timeout=5).json()["store"]


def dead_nodes(launcher: Launcher) -> list[str]:
    return [n["name"] for n in redis_view(launcher)["nodes"] if not n["alive"]]


def kill_primary(launcher: Launcher) -> tuple[str, float, float]:
    """Kill whichever node is primary now; return its name, when the kill command
    started and when it returned (the node is dead by then; the SIGKILL is its
    last step, so times are measured from the return)."""
    old = redis_view(launcher)["primary"]
    assert old is not None
    started = time.monotonic()
    launcher.run("kill", "redis-primary")
    return old, started, time.monotonic()


def wait_for_promotion(launcher: Launcher, old: str) -> str:
    """Wait until the Sentinels name another primary; return its name."""
    view: dict = {}

    def promoted() -> bool:
        view.update(redis_view(launcher))
        return view["primary"] not in (None, old)

    procs.wait_until(promoted, timeout=FAILOVER_TIMEOUT, interval=0.1, what="a promotion")
    return view["primary"]


def write_acknowledged(shopper: SimulatedShopper) -> bool:
    """One write attempt: an earlier 503'd add retried with its own key, else a new add."""
    return shopper.settle_one() if shopper.pending else shopper.add("paper-filters", 1)


def failure_log(load: LoadGenerator) -> list[FailureRecord]:
    return [f for s in load.shoppers for f in s.failure_log]


def assert_only_fast_503s(failures: list[FailureRecord]) -> None:
    assert all(f.status == 503 for f in failures), [f.what for f in failures if f.status != 503]
    slow = [f"{f.seconds:.2f}s {f.what}" for f in failures if f.seconds >= FAST]
    assert not slow, slow


def assert_nothing_lost(report: LoadReport, shoppers: list[SimulatedShopper]) -> None:
    # Every acknowledged add is there, none doubled (503'd ones settled by key).
    assert report.carts_match, report.mismatches
    assert report.forced_logins == 0  # no shopper found itself logged out meanwhile
    # Every session intact: each shopper is still logged in as itself.
    for shopper in shoppers:
        me = shopper.must("GET", "/api/me").json()
        assert me["username"] == shopper.name


def acknowledged_before_the_kill(load: LoadGenerator) -> None:
    procs.wait_until(
        lambda: sum(sum(s.acknowledged.values()) for s in load.shoppers) >= 2 * len(load.shoppers),
        timeout=30,
        what="acknowledged adds before the kill",
    )


# --------------------------------------------------------- the default: 2 replicas
def test_status_shows_the_topology(ha_cluster: Launcher) -> None:
    # The first test of the module: the cluster as `up` left it.
    view = redis_view(ha_cluster)
    assert view["mode"] == "ha" and view["primary"] == "redis-1"
    assert view["url"].startswith("redis+sentinel://127.0.0.1:")
    roles = {n["name"]: n["role"] for n in view["nodes"]}
    assert roles == {"redis-1": "primary", "redis-2": "replica", "redis-3": "replica"}
    assert [s["ready"] for s in view["sentinels"]] == [True, True, True]
    assert all(s["other_sentinels"] == 2 and s["quorum"] == 2 for s in view["sentinels"])
    assert all(s["replicas"] == 2 for s in view["sentinels"])
    # Sentinel rewrites its config: it must be ours to write, in the workdir.
    conf = ha_cluster.workdir / "sentinel-1" / "sentinel.conf"
    assert "sentinel known-replica" in conf.read_text()
    assert "With 1 Redis replica" not in ha_cluster.up_output
    # Which replicas are in sync, for `status` and for the cluster page alike.
    assert view["replicas_in_sync"] == 2
    assert all(n["in_sync"] and n["link_up"] for n in view["nodes"] if n["role"] == "replica")
    assert "replicas in sync: 2" in ha_cluster.run("status").stdout
    store = store_on_the_page(ha_cluster)
    assert store["address"] == f"127.0.0.1:{node_port(ha_cluster, 'redis-1')}"
    assert store["role"] == "primary" and store["writes_accepted"]
    assert store["replicas_in_sync"] == 2 and store["writes_need"] == 1
    replica_ports = {n["port"] for n in view["nodes"] if n["role"] == "replica"}
    assert {link["port"] for link in store["replicas"]} == replica_ports


def test_demo_kills_the_primary_and_writes_go_on_with_it_dead(ha_cluster: Launcher) -> None:
    primary = redis_view(ha_cluster)["primary"]
    out = ha_cluster.run("demo", timeout=300).stdout
    for expected in (
        f"{primary}, the Redis primary",
        "is the primary now",
        f"Writes go on with {primary} still dead",
        "a cart write is acknowledged again",
        f"{primary} comes back and rejoins as a replica",
        "cart intact",
    ):
        assert expected in out, out
    assert re.search(r"2 replica\(s\) in sync", out)  # the table of nodes, before and after
    assert re.search(r"every cart == acknowledged adds\s+yes", out)
    roles = sorted(n["role"] for n in redis_view(ha_cluster)["nodes"])
    assert roles == ["primary", "replica", "replica"]


def test_losing_the_primary_under_load_writes_resume_with_it_still_dead(
    ha_cluster: Launcher,
) -> None:
    url = ha_cluster.url
    watcher, probe = SimulatedShopper(url), SimulatedShopper(url)
    for shopper in (watcher, probe):
        shopper.sign_up()
    assert watcher.add("espresso-cup", 2)

    with LoadGenerator(url, SHOPPERS, duration=120, max_requests=5000, think=0.05) as load:
        acknowledged_before_the_kill(load)
        old, kill_started, killed_at = kill_primary(ha_cluster)
        # Writes are acknowledged again (a replica is left to WAIT for) ...
        procs.wait_until(
            lambda: write_acknowledged(probe),
            timeout=WRITES_BACK - (time.monotonic() - killed_at),
            interval=0.1,
            what=f"a write acknowledged within {WRITES_BACK:.0f}s of the kill",
        )
        writes_back = time.monotonic() - killed_at
        # ... with the old primary still dead.
        view = redis_view(ha_cluster)
        promoted = view["primary"]
        assert promoted not in (None, old)
        assert [n["name"] for n in view["nodes"] if not n["alive"]] == [old]
        window_end = time.monotonic()
        # The cluster page names the new primary, its one replica in sync.
        procs.wait_until(
            lambda: store_on_the_page(ha_cluster)["replicas_in_sync"] == 1,
            timeout=10,
            what="the cluster page to show the replica in sync",
        )
        store = store_on_the_page(ha_cluster)
        assert store["address"].endswith(f":{node_port(ha_cluster, promoted)}")
        wait_for_requests(load, 150, "after the window")  # which must all succeed
    report = load.report()

    failures = failure_log(load)
    inside = [f for f in failures if kill_started <= f.at <= window_end + 1.0]
    window = max((f.at + f.seconds for f in inside), default=killed_at) - min(
        (f.at for f in inside), default=killed_at
    )
    slowest = max((f.seconds for f in failures), default=0.0)
    print(
        f"\nkilled {old}; {promoted} promoted; writes acknowledged again "
        f"{writes_back:.2f}s after the kill, {old} still dead; {report.requests} requests by "
        f"{SHOPPERS} shoppers, {len(inside)} fast 503s over {window:.2f}s (first to last; "
        f"slowest {slowest:.2f}s), {len(failures) - len(inside)} after; "
        f"carts match: {report.carts_match}"
    )
    assert_only_fast_503s(failures)
    assert failures == inside, [f.what for f in failures if f not in inside][:5]
    assert_nothing_lost(report, [watcher, probe, *load.shoppers])
    assert watcher.cart() == {"espresso-cup": 2}
    assert probe.cart() == dict(probe.acknowledged)
    assert dead_nodes(ha_cluster) == [old]


def test_losing_the_promoted_primary_too_reads_go_on_writes_get_fast_503s(
    ha_cluster: Launcher,
) -> None:
    """Two nodes dead: the last one is promoted with no replica to acknowledge
    writes. Reads are served, writes get fast 503s that change nothing (never
    a hang or a 500), and writes come back once a node is started again."""
    url = ha_cluster.url
    watcher = SimulatedShopper(url)
    watcher.sign_up()
    first, *_ = kill_primary(ha_cluster)
    procs.wait_until(lambda: write_acknowledged(watcher), timeout=WRITES_BACK, what="a write")
    cart = watcher.cart()

    with LoadGenerator(url, 4, duration=120, max_requests=5000, think=0.05) as load:
        acknowledged_before_the_kill(load)
        second, _, killed_at = kill_primary(ha_cluster)
        last = wait_for_promotion(ha_cluster, second)
        promoted_after = time.monotonic() - killed_at
        assert sorted(dead_nodes(ha_cluster)) == sorted([first, second])

        reads = writes = 0
        refusals: list[float] = []
        watched_until = time.monotonic() + DEGRADED_SECONDS
        while time.monotonic() < watched_until:
            # Reads: the last node serves them (a session, a cart, the catalog).
            assert watcher.cart() == cart
            assert watcher.must("GET", "/api/me").json()["username"] == watcher.name
            reads += 2
            # Writes: refused fast, with a JSON error and Retry-After, changing nothing.
            started = time.monotonic()
            response = requests.post(
                f"{url}/api/cart/items",
                json={"product_id": "paper-filters", "qty": 1},
                cookies=watcher.session.cookies,
                headers={"Idempotency-Key": f"refused-{writes}"},
                timeout=(3.05, FAST * 2),
            )
            refusals.append(time.monotonic() - started)
            writes += 1
            assert response.status_code == 503, response.text[:200]
            assert response.json()["error"] == "store_unavailable"
            assert int(response.headers["Retry-After"]) > 0
        assert max(refusals) < FAST, refusals
        store = store_on_the_page(ha_cluster)
        assert store["address"].endswith(f":{node_port(ha_cluster, last)}")
        assert store["replicas_in_sync"] == 0 and not store["writes_accepted"]
        assert "writes get 503 until a replica is in sync" in ha_cluster.run("status").stdout

        # A node started again rejoins as a replica of the last one: writes resume.
        restarted_at = time.monotonic()
        ha_cluster.run("start", first)
        procs.wait_until(
            lambda: write_acknowledged(watcher),
            timeout=FAILOVER_TIMEOUT,
            interval=0.1,
            what=f"a write acknowledged after {first} is back",
        )
        recovered = time.monotonic() - restarted_at
        wait_for_requests(load, 50, "after the recovery")
    report = load.report()

    failures = failure_log(load)
    refusals.sort()
    print(
        f"\nkilled {second} too ({first} still dead); {last} promoted after "
        f"{promoted_after:.2f}s; with two nodes dead: {reads} reads served, {writes} writes "
        f"refused (503 in {refusals[len(refusals) // 2]:.3f}s median, "
        f"{refusals[-1]:.3f}s slowest); writes acknowledged again {recovered:.2f}s after "
        f"`start {first}`; background: {report.requests} requests, {len(failures)} fast "
        f"503s; carts match: {report.carts_match}"
    )
    assert_only_fast_503s(failures)
    assert_nothing_lost(report, [watcher, *load.shoppers])
    assert watcher.cart() == dict(watcher.acknowledged)


# ------------------------------------------------------------ --redis-replicas 1
def test_one_replica_is_explained_when_chosen(one_replica_cluster: Launcher) -> None:
    assert "With 1 Redis replica" in one_replica_cluster.up_output
    roles = sorted(n["role"] for n in redis_view(one_replica_cluster)["nodes"])
    assert roles == ["primary", "replica"]


def test_primary_killed_under_load_loses_nothing(one_replica_cluster: Launcher) -> None:
    """With one replica, the promoted node has no replica until the old primary
    is back, so writes are refused (fast 503) until then: the window measured
    here runs from the kill to the rejoin. Reads are served again as soon as
    the failover completes."""
    launcher = one_replica_cluster
    url = launcher.url
    watcher = SimulatedShopper(url)
    watcher.sign_up()
    assert watcher.add("espresso-cup", 2)

    with LoadGenerator(url, SHOPPERS, duration=120, max_requests=5000, think=0.05) as load:
        acknowledged_before_the_kill(load)
        old, kill_started, killed_at = kill_primary(launcher)
        wait_for_promotion(launcher, old)
        failover = time.monotonic() - killed_at
        # Reads work again as soon as the failover is done, with no restart.
        procs.wait_until(
            lambda: requests.get(f"{url}/api/products", timeout=5).status_code == 200,
            timeout=10,
            what="reads after the failover",
        )
        launcher.run("start", old)
        procs.wait_until(
            lambda: (
                requests.get(f"{url}/readyz", timeout=5).status_code == 200
                and any(
                    n["name"] == old and n["role"] == "replica" and n.get("link_up")
                    for n in redis_view(launcher)["nodes"]
                )
            ),
            timeout=30,
            interval=0.1,
            what=f"{old} to rejoin as a replica",
        )
        window_end = time.monotonic()
        wait_for_requests(load, 150, "after the window")  # which must all succeed
        new_primary = redis_view(launcher)["primary"]
    report = load.report()

    failures = failure_log(load)
    inside = [f for f in failures if kill_started <= f.at <= window_end + 1.0]
    after = [f for f in failures if f.at > window_end + 1.0]
    slowest = max((f.seconds for f in failures), default=0.0)
    print(
        f"\nfailover (kill -> Sentinel names {new_primary}): {failover:.2f}s; "
        f"window (kill -> {old} rejoined): {window_end - killed_at:.2f}s; "
        f"{report.requests} requests, {len(inside)} failed inside the window "
        f"(statuses {sorted({f.status for f in inside}, key=str)}, slowest {slowest:.2f}s), "
        f"{len(after)} after; carts match: {report.carts_match}"
    )
    assert new_primary != old
    assert_only_fast_503s(failures)
    assert failures == inside, [f.what for f in after][:5]
    assert_nothing_lost(report, [watcher, *load.shoppers])
    assert watcher.cart() == {"espresso-cup": 2}


def test_old_primary_holds_the_new_data_as_a_replica(one_replica_cluster: Launcher) -> None:
    launcher = one_replica_cluster
    old, *_ = kill_primary(launcher)
    new = wait_for_promotion(launcher, old)
    launcher.run("start", old)
    settled(launcher)
    view = redis_view(launcher)
    primary = next(n for n in view["nodes"] if n["name"] == new)
    replica = next(n for n in view["nodes"] if n["name"] == old)
    assert replica["role"] == "replica" and replica["replica_of"] == primary["port"]
    shopper = SimulatedShopper(launcher.url)
    shopper.sign_up()  # a write acknowledged by the rejoined replica (WAIT 1)
    assert shopper.add("espresso-cup", 1)
