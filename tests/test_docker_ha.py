"""The compose file's ha profile, booted for real: `redis` (the first primary),
redis-2 and redis-3 (its replicas), three Sentinels, the shop pointed at them
with SHOP_REPLICA_ACKS=1. The primary's container is `docker kill`ed under
load: writes resume within 10 s and no acknowledged write is lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from docker_support import (
    HA_NODES,
    HA_PROFILE_ENV,
    HA_SENTINELS,
    Compose,
    PrivateDocker,
    compose_project,
)

from shop.cluster import procs
from shop.cluster.loadgen import LoadGenerator, SimulatedShopper

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

WRITES_RESUME_WITHIN = 10.0  # seconds after the kill (issue 14)
SHOPPERS = 6
FAST = 3.0  # no failed request may take longer than this (seconds)


def sentinel(compose: Compose, *command: str) -> list[str]:
    """`redis-cli -p 26379 COMMAND` in sentinel-1's container, one line per value."""
    (container,) = compose.containers("sentinel-1")
    out = compose.engine.cli(
        "exec", container["Id"], "redis-cli", "-p", "26379", "--raw", *command, timeout=15
    ).stdout
    return out.splitlines()


def primary(compose: Compose) -> str:
    """The node the Sentinels name as primary now (its service name)."""
    return sentinel(compose, "sentinel", "get-master-addr-by-name", "shop")[0]


def healthy_replicas(compose: Compose) -> set[str]:
    """Replicas the Sentinels know and consider up."""
    lines = sentinel(compose, "sentinel", "replicas", "shop")
    replicas, current = [], {}
    for key, value in zip(lines[::2], lines[1::2], strict=False):
        if key == "name" and current:
            replicas.append(current)
            current = {}
        current[key] = value
    if current:
        replicas.append(current)
    return {
        r["ip"]
        for r in replicas
        if "s_down" not in r.get("flags", "") and r.get("master-link-status") == "ok"
    }


@pytest.fixture(scope="module")
def ha_stack(docker_engine: PrivateDocker) -> Iterator[Compose]:
    with compose_project(docker_engine, 1, HA_PROFILE_ENV) as compose:
        compose.run("--profile", "ha", "up", "--build", "--detach", "--scale", "shop=2")
        compose.wait_healthy(
            {"shop": 2, "nginx": 1, **{n: 1 for n in HA_NODES}, **{s: 1 for s in HA_SENTINELS}}
        )
        procs.wait_until(
            lambda: (
                primary(compose) == "redis"
                and healthy_replicas(compose) == {"redis-2", "redis-3"}
                and requests.get(f"{compose.url}/readyz", timeout=5).status_code == 200
            ),
            timeout=60,
            interval=0.5,
            what="the Sentinels to know both replicas and the shop to be ready",
        )
        yield compose


def test_the_ha_profile_runs_every_redis_container_it_starts(ha_stack: Compose) -> None:
    running = {c["Config"]["Labels"]["com.docker.compose.service"] for c in ha_stack.containers()}
    assert running == {"shop", "nginx", *HA_NODES, *HA_SENTINELS}
    # The always-on `redis` is the primary, not a node left idle beside the topology.
    assert primary(ha_stack) == "redis"
    assert healthy_replicas(ha_stack) == {"redis-2", "redis-3"}


def test_killing_the_primary_container_loses_no_acknowledged_write(
    ha_stack: Compose, docker_engine: PrivateDocker
) -> None:
    url = ha_stack.url
    watcher = SimulatedShopper(url)
    watcher.sign_up()
    assert watcher.add("espresso-cup", 2)
    old = primary(ha_stack)
    (victim,) = ha_stack.containers(old)

    def write_acknowledged() -> bool:
        if watcher.pending:
            watcher.settle_one()  # a 503'd add, retried with its own key
        return not watcher.pending and watcher.add("paper-filters", 1)

    with LoadGenerator(url, SHOPPERS, duration=90, max_requests=5000, think=0.05) as load:
        time.sleep(2)  # acknowledged writes before the kill
        killed_at = time.monotonic()
        docker_engine.cli("kill", victim["Id"])
        procs.wait_until(
            write_acknowledged, timeout=30, interval=0.1, what="a write after the kill"
        )
        resumed = time.monotonic() - killed_at
        time.sleep(4)  # load after the window: must be clean
    report = load.report()
    new_primary = primary(ha_stack)

    failures = [f for s in load.shoppers for f in s.failure_log]
    window_end = killed_at + resumed + 1.0  # each worker finds the new primary on its own
    after = [f for f in failures if f.at > window_end]
    slowest = max((f.seconds for f in failures), default=0.0)
    print(
        f"\nwrites acknowledged again {resumed:.2f}s after the kill of {old}'s container; "
        f"new primary {new_primary}; {report.requests} requests, {len(failures)} failed "
        f"(statuses {sorted({f.status for f in failures}, key=str)}, slowest {slowest:.2f}s), "
        f"{len(after)} after; carts match: {report.carts_match}"
    )
    assert resumed <= WRITES_RESUME_WITHIN
    assert new_primary in ("redis-2", "redis-3")
    assert all(f.status == 503 for f in failures), [f.what for f in failures][:5]
    assert slowest < FAST, [f"{f.seconds:.2f}s {f.what}" for f in failures if f.seconds >= FAST]
    assert after == [], [f.what for f in after][:5]
    # Every acknowledged add is there, none doubled (503'd ones settled by key).
    assert report.carts_match, report.mismatches
    for shopper in [watcher, *load.shoppers]:  # every session intact
        assert shopper.must("GET", "/api/me").json()["username"] == shopper.name
    assert watcher.cart() == dict(watcher.acknowledged)

    # `up` starts the killed container again: it rejoins as a replica.
    ha_stack.run("--profile", "ha", "up", "--detach", "--scale", "shop=2")
    procs.wait_until(
        lambda: healthy_replicas(ha_stack) == set(HA_NODES) - {new_primary},
        timeout=60,
        interval=0.5,
        what=f"{old} to rejoin as a replica of {new_primary}",
    )
    assert watcher.add("espresso-cup", 1)  # acknowledged with the old primary back


def test_down_leaves_no_container_network_or_volume(ha_stack: Compose) -> None:
    ha_stack.run("--profile", "ha", "down", "--volumes")
    assert ha_stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
