"""End to end, HA store: `shop-cluster up --redis ha`, shoppers under load, the Redis
primary SIGKILLed through the launcher, Sentinel fails over, nothing acknowledged
is lost, and the old primary comes back as a replica.

With one replica and SHOP_REPLICA_ACKS=1, the promoted node has no replica
until the old primary is back, so writes are refused (fast 503) until then:
the window measured here runs from the kill to the rejoin. Reads are served
again as soon as the failover completes.

After each test the shared cluster is put back as promised, redis-1 primary
again (a Sentinel-run failover back), so the tests pass in any order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
import requests
from cluster_support import Launcher, restoring, running_cluster, wait_for_requests

from shop.cluster import ha, procs
from shop.cluster.loadgen import LoadGenerator, SimulatedShopper

pytestmark = pytest.mark.cluster

SHOPPERS = 6
REPLICAS = 2
FAST = 3.0  # no failed request may take longer than this (seconds)
# A failover takes about 3 s here (down-after 1 s, an election, a promotion);
# ten times that means it is not happening.
FAILOVER_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    with running_cluster(tmp_path_factory.mktemp("ha"), replicas=REPLICAS, redis="ha") as launcher:
        yield launcher


@pytest.fixture(autouse=True)
def as_promised(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test on the shared cluster: every process back, redis-1 primary."""
    yield from restoring(request, "ha_cluster", REPLICAS)
    if "ha_cluster" in request.fixturenames:
        fail_back(request.getfixturevalue("ha_cluster"), "redis-1")


def fail_back(launcher: Launcher, node: str) -> None:
    """Have the Sentinels make `node` primary again (SENTINEL FAILOVER promotes a
    replica), then wait until every replica is in sync and the shop takes writes."""
    if redis_view(launcher)["primary"] != node:
        sentinel = redis_view(launcher)["sentinels"][0]["port"]
        with redis.Redis(procs.LOOPBACK, sentinel, socket_timeout=5) as client:
            client.sentinel_failover(ha.SERVICE)

    def settled() -> bool:
        view = redis_view(launcher)
        replicas = [n for n in view["nodes"] if n["name"] != node]
        return (
            view["primary"] == node
            and all(n["role"] == "replica" and n.get("link_up") for n in replicas)
            and requests.get(f"{launcher.url}/readyz", timeout=5).status_code == 200
        )

    procs.wait_until(settled, timeout=FAILOVER_TIMEOUT, interval=0.2, what=f"{node} primary")


def redis_view(launcher: Launcher) -> dict:
    return launcher.status()["redis"]


def test_status_shows_the_topology(ha_cluster: Launcher) -> None:
    view = redis_view(ha_cluster)
    assert view["mode"] == "ha" and view["primary"] == "redis-1"
    assert view["url"].startswith("redis+sentinel://127.0.0.1:")
    roles = {n["name"]: n["role"] for n in view["nodes"]}
    assert roles == {"redis-1": "primary", "redis-2": "replica"}
    assert [s["ready"] for s in view["sentinels"]] == [True, True, True]
    assert all(s["other_sentinels"] == 2 and s["quorum"] == 2 for s in view["sentinels"])
    # Sentinel rewrites its config: it must be ours to write, in the workdir.
    conf = ha_cluster.workdir / "sentinel-1" / "sentinel.conf"
    assert "sentinel known-replica" in conf.read_text()


def test_primary_killed_under_load_loses_nothing(ha_cluster: Launcher) -> None:
    url = ha_cluster.url
    watcher = SimulatedShopper(url)
    watcher.sign_up()
    assert watcher.add("espresso-cup", 2)

    with LoadGenerator(url, SHOPPERS, duration=120, max_requests=5000, think=0.05) as load:
        procs.wait_until(  # some acknowledged writes before the kill
            lambda: sum(sum(s.acknowledged.values()) for s in load.shoppers) >= 2 * SHOPPERS,
            timeout=30,
            what="acknowledged adds before the kill",
        )
        old = redis_view(ha_cluster)["primary"]
        killed_at = time.monotonic()
        ha_cluster.run("kill", "redis-primary")

        def promoted() -> bool:
            view = redis_view(ha_cluster)
            return view["primary"] not in (None, old)

        procs.wait_until(promoted, timeout=FAILOVER_TIMEOUT, interval=0.1, what="a promotion")
        failover = time.monotonic() - killed_at
        # Reads work again as soon as the failover is done, with no restart.
        procs.wait_until(
            lambda: requests.get(f"{url}/api/products", timeout=5).status_code == 200,
            timeout=10,
            what="reads after the failover",
        )
        ha_cluster.run("start", old)
        procs.wait_until(
            lambda: (
                requests.get(f"{url}/readyz", timeout=5).status_code == 200
                and any(
                    n["name"] == old and n["role"] == "replica" and n.get("link_up")
                    for n in redis_view(ha_cluster)["nodes"]
                )
            ),
            timeout=30,
            interval=0.1,
            what=f"{old} to rejoin as a replica",
        )
        window_end = time.monotonic()
        wait_for_requests(load, 150, "after the window")  # which must all succeed
        new_primary = redis_view(ha_cluster)["primary"]
    report = load.report()

    failures = [f for s in load.shoppers for f in s.failure_log]
    inside = [f for f in failures if killed_at - 0.5 <= f.at <= window_end + 1.0]
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
    assert all(f.status == 503 for f in failures), [f.what for f in failures][:5]
    assert slowest < FAST, [f"{f.seconds:.2f}s {f.what}" for f in failures if f.seconds >= FAST]
    assert failures == inside, [f.what for f in after][:5]
    # Every acknowledged add is there, none doubled (503'd ones settled by key).
    assert report.carts_match, report.mismatches
    assert report.forced_logins == 0  # no shopper found itself logged out meanwhile
    # Every session intact: each shopper is still logged in as itself.
    for shopper in [watcher, *load.shoppers]:
        me = shopper.must("GET", "/api/me").json()
        assert me["username"] == shopper.name
    assert watcher.cart() == {"espresso-cup": 2}


def test_old_primary_holds_the_new_data_as_a_replica(ha_cluster: Launcher) -> None:
    view = redis_view(ha_cluster)
    primary = next(n for n in view["nodes"] if n["name"] == view["primary"])
    replica = next(n for n in view["nodes"] if n["name"] != view["primary"])
    assert replica["role"] == "replica" and replica["replica_of"] == primary["port"]
    shopper = SimulatedShopper(ha_cluster.url)
    shopper.sign_up()  # a write acknowledged by the rejoined replica (WAIT 1)
    assert shopper.add("espresso-cup", 1)


def test_with_two_redis_replicas_writes_go_on_after_a_failover(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`--redis-replicas 2`: after the primary dies, a replica is left to
    acknowledge writes, so they resume once Sentinel has promoted another
    node, without waiting for the old primary to come back."""
    workdir = tmp_path_factory.mktemp("ha2")
    with running_cluster(workdir, 2, "ha", "--redis-replicas", "2") as launcher:
        roles = sorted(n["role"] for n in redis_view(launcher)["nodes"])
        assert roles == ["primary", "replica", "replica"]
        shopper = SimulatedShopper(launcher.url)
        shopper.sign_up()
        assert shopper.add("espresso-cup", 1)
        old = redis_view(launcher)["primary"]
        killed_at = time.monotonic()
        launcher.run("kill", "redis-primary")

        def write_acknowledged() -> bool:
            if shopper.pending:
                shopper.settle_one()  # a 503'd add, retried with its own key
            return not shopper.pending and shopper.add("paper-filters", 1)

        procs.wait_until(write_acknowledged, timeout=30, interval=0.2, what="a write after it")
        print(f"\nwrites acknowledged again {time.monotonic() - killed_at:.2f}s after the kill")
        view = redis_view(launcher)
        assert view["primary"] not in (None, old)
        assert not any(n["alive"] for n in view["nodes"] if n["name"] == old)  # still dead
        assert shopper.cart() == dict(shopper.acknowledged)
