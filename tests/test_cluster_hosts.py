"""End to end on hosts: `shop-cluster up --hosts` puts every node on a network
namespace of its own, behind two load balancers sharing one virtual IP, and
the shop is reached from this machine (the client) at that address.

One cluster serves the module; tests run in file order and leave it as they
found it, and the last one takes it down and checks that nothing is left.
Needs root (CI runs as root); skipped, saying why, where network namespaces
cannot be made.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
import requests
from cluster_support import Launcher, leftovers, running_cluster

from shop.cluster import netns

UNAVAILABLE = netns.unavailable()
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.hosts,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"hosts mode: {UNAVAILABLE}"),
]

REPLICAS = 3


@pytest.fixture(scope="module")
def before() -> set[str]:
    """The named network namespaces that existed before the cluster (others' too)."""
    return set(netns.namespaces())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, before: set[str]) -> Iterator[Launcher]:
    workdir = tmp_path_factory.mktemp("hosts")
    with running_cluster(workdir, REPLICAS, hosts=True) as launcher:
        yield launcher


def served_by(url: str, count: int) -> list[str]:
    with requests.Session() as http:
        return [
            http.get(f"{url}/api/products", timeout=10).headers["X-Served-By"] for _ in range(count)
        ]


def hosts_by_name(launcher: Launcher) -> dict[str, dict]:
    return {h["name"]: h for h in launcher.status()["hosts"]}


# ---------------------------------------------------------------------------
def test_every_replica_serves_through_the_virtual_ip(cluster: Launcher) -> None:
    status = cluster.status()
    hosts = {h["name"]: h for h in status["hosts"]}
    assert list(hosts) == ["lb-1", "lb-2", "app-1", "app-2", "app-3", "redis-1"]
    subnet = ipaddress.ip_network(f"{hosts['lb-1']['address']}/24", strict=False)
    assert subnet.subnet_of(netns.SUPERNET)
    vip = str(subnet[netns.VIP_OCTET])
    assert status["url"] == f"http://{vip}/"
    assert len({h["address"] for h in hosts.values()}) == len(hosts)
    assert all(h["up"] for h in hosts.values())
    assert [name for name, h in hosts.items() if h["vip"]] == ["lb-1"]  # the first election

    # Every process runs inside its host's namespace, at its host's address.
    state = cluster.recorded_state()
    for row in [*status["replicas"], status["redis"], *status["balancers"]]:
        host = next(h for h in hosts.values() if row["name"] in h["processes"])
        assert row["address"] == host["address"] and row["ready"], row
        assert row["pid"] in netns.pids(state.network.host(host["name"]).netns), row

    assert set(served_by(cluster.url, 2 * REPLICAS)) == {"shop-1", "shop-2", "shop-3"}
    # Through lb-1, which holds the address: its nginx logged those requests.
    access = (cluster.workdir / "logs" / "nginx-1-access.log").read_text()
    assert access.count("GET /api/products") >= 2 * REPLICAS


def test_down_leaves_no_namespace_link_bridge_or_process(
    cluster: Launcher, before: set[str]
) -> None:
    state = cluster.recorded_state()
    pids = cluster.recorded_pids()
    cluster.run("down")
    # Every namespace of ours is gone, and none was left that was not there
    # before; others may have come and gone meanwhile (other suites share the
    # machine), so the list is not compared whole.
    after = set(netns.namespaces())
    assert not any(n.startswith(state.network.id) for n in after)
    assert not {n for n in after - before if n.startswith("shop-")}
    assert not netns.link_exists(state.network.client_link)
    assert leftovers(pids) == set()
    # (No request to the virtual IP now: without the client link, the machine's
    # default route would carry it off to the real network.)
