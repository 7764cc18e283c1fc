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
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cluster_support import (
    Launcher,
    assert_clean,
    event_time,
    hosts_module_marks,
    leftovers,
    running_cluster,
    save_timeline,
    served_by,
    slowest_since,
    wait_for_requests,
    wait_in_rotation,
)

from shop.cluster import netns, procs
from shop.cluster.loadgen import LoadGenerator, LoadReport
from shop.cluster.state import State
from shop.cluster.timeline import EventLog, Sample

pytestmark = hosts_module_marks()

REPLICAS = 3
LOAD_SHOPPERS = 8
# Bounds of every load here (each test stops its shoppers well before).
LOAD_BOUND = 90.0
# The slowest request any shopper may meet: nginx gives up on a vanished
# replica after 3 s (proxy_read_timeout) and resends the request elsewhere.
SLOWEST = 5.0
# lb-2 takes the address after 3 missed advertisements (0.2 s apart) plus its
# skew, about 0.7 s; keepalived and a busy machine add some.
HANDOVER = 3.0
# After this long without answers nginx (timeouts, max_fails) and the watchdog
# (probes) send nothing to a powered-off replica any more.
ROUTED_AROUND = 5.0
# How long app-2 stays off after that, so requests routed around are seen.
STILL_OFF = 3.0
FREEZE_SECONDS = 15.0
# keepalived runs its check of nginx every second.
CHECK_INTERVAL = 1.0


@pytest.fixture(scope="module")
def before() -> set[str]:
    """The named network namespaces that existed before the cluster (others' too)."""
    return set(netns.namespaces())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, before: set[str]) -> Iterator[Launcher]:
    workdir = tmp_path_factory.mktemp("hosts")
    with running_cluster(workdir, REPLICAS, hosts=True) as launcher:
        yield launcher


def hosts_by_name(launcher: Launcher) -> dict[str, dict]:
    return {h["name"]: h for h in launcher.status()["hosts"]}


def holder(launcher: Launcher) -> str | None:
    """The load balancer holding the virtual IP, as `status` says."""
    return next((n for n, h in hosts_by_name(launcher).items() if h["vip"]), None)


def shoppers(launcher: Launcher, think: float = 0.02) -> LoadGenerator:
    """8 shoppers, bounded: the test stops them long before these bounds."""
    return LoadGenerator(
        launcher.url, LOAD_SHOPPERS, duration=LOAD_BOUND, max_requests=6000, think=think
    )


def summary(
    launcher: Launcher, load: LoadGenerator, report: LoadReport, since: float, name: str, title: str
) -> Sample:
    """Print what the failure at `since` cost, with its timeline chart; return the
    slowest request it met."""
    slowest = slowest_since(report, since)
    note = save_timeline(launcher, load, report, name, title)
    print(
        f"\n{title}: {report.requests} requests by {report.shoppers} shoppers, "
        f"{len(report.failures)} failed, {report.resent} resent after a reset; slowest since "
        f"then {slowest.seconds:.2f} s ({slowest.what}, served by {slowest.served_by}); "
        f"of the whole run, sign-ups included: {report.slowest.seconds:.2f} s\n{note}"
    )
    return slowest


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


def test_power_off_of_a_serving_app_host_fails_no_request(cluster: Launcher) -> None:
    """A machine that vanishes mid-load: its cable pulled (packets vanish, no
    reset), then its processes die. nginx's bounded timeouts and the watchdog
    route around it; POSTs resent elsewhere are applied once (Idempotency-Key)."""
    with shoppers(cluster) as load:
        wait_for_requests(load, 200, "before the power-off")
        assert "shop-2" in load.served_by()  # app-2 is serving
        cluster.run("power-off", "app-2")
        off = event_time(cluster, "power-off", "app-2")
        wait_for_requests(load, LOAD_SHOPPERS * 60, "with app-2 off")
        # Off for a while after it was routed around, so the window checked
        # below holds requests on a fast machine too.
        time.sleep(max(0.0, off + ROUTED_AROUND + STILL_OFF - time.time()))
        assert not hosts_by_name(cluster)["app-2"]["up"]
        cluster.run("power-on", "app-2")
        on = event_time(cluster, "power-on", "app-2")
        wait_in_rotation(cluster.url, "shop-2")
        wait_for_requests(load, 200, "after the power-on")
    report = load.report()
    served_late = [s for s in report.samples if off + ROUTED_AROUND < s.at < on]
    title = f"app-2 powered off under {LOAD_SHOPPERS} shoppers, then on (hosts, 3 replicas)"
    slowest = summary(cluster, load, report, off, "hosts-power-off-app", title)
    assert_clean(report, at_least=LOAD_SHOPPERS * 60)
    assert slowest.seconds <= SLOWEST, slowest
    # nginx stopped sending to app-2 within seconds, not one request at a time.
    assert len(served_late) >= LOAD_SHOPPERS, "too few requests while app-2 was off"
    assert not [s for s in served_late if s.served_by == "shop-2"]


def test_power_off_of_the_load_balancer_holding_the_address(cluster: Launcher) -> None:
    """lb-1 vanishes: lb-2 misses its advertisements, takes the address and
    announces it (gratuitous ARP). Open connections to lb-1 are answered by
    lb-2 with a reset; the shoppers resend once with the same key."""
    state = cluster.recorded_state()
    lb1, lb2 = (state.network.host(n) for n in ("lb-1", "lb-2"))
    with shoppers(cluster) as load:
        wait_for_requests(load, 200, "before the power-off")
        assert holder(cluster) == "lb-1"
        cluster.run("power-off", "lb-1")
        cut = event_time(cluster, "power-off", "lb-1")
        procs.wait_until(
            lambda: state.network.vip in netns.addresses(lb2), timeout=30, interval=0.02,
            what="lb-2 to take the virtual IP",
        )  # fmt: skip
        handover = time.time() - cut
        assert state.network.vip not in netns.addresses(lb1)
        wait_for_requests(load, LOAD_SHOPPERS * 60, "through lb-2")
        cluster.run("power-on", "lb-1")
        wait_for_requests(load, 200, "after lb-1 is back")
        after = holder(cluster)
    EventLog(cluster.workdir / "events.jsonl").record(
        "vip", "lb-2", label=f"address on lb-2 (+{handover:.2f} s)", at=cut + handover
    )
    report = load.report()
    print(f"\nhandover lb-1 -> lb-2: {handover:.2f} s after the cable was pulled; "
          f"after power-on the address is on {after}")  # fmt: skip
    title = f"lb-1 (holding the virtual IP) powered off under {LOAD_SHOPPERS} shoppers, then on"
    slowest = summary(cluster, load, report, cut, "hosts-power-off-lb", title)
    assert_clean(report, at_least=LOAD_SHOPPERS * 60)
    assert slowest.seconds <= SLOWEST, slowest
    assert handover <= HANDOVER
    # No preemption: lb-1 comes back as the backup, nobody's connection is reset again.
    assert after == "lb-2"
    assert hosts_by_name(cluster)["lb-1"]["up"]


def test_a_dead_nginx_on_a_live_host_gives_the_address_away(cluster: Launcher) -> None:
    """keepalived checks its own nginx every second (a curl of its health
    location): the host is fine, but without nginx it must not keep the address."""
    state = cluster.recorded_state()
    before = holder(cluster)
    other = "lb-1" if before == "lb-2" else "lb-2"
    nginx = f"nginx-{before.removeprefix('lb-')}"
    cluster.run("kill", nginx)
    killed = event_time(cluster, "kill", nginx)
    peer = state.network.host(other)
    procs.wait_until(
        lambda: state.network.vip in netns.addresses(peer), timeout=30, interval=0.02,
        what=f"{other} to take the address",
    )  # fmt: skip
    moved = time.time() - killed
    cluster.run("start", nginx)
    print(f"\n{nginx} killed on {before}: the address moved to {other} after {moved:.2f} s")
    assert moved <= HANDOVER + CHECK_INTERVAL
    assert served_by(cluster.url, 3)  # and the shop answers at the address


def test_a_frozen_replica_on_its_host_costs_a_shopper_seconds_at_most(cluster: Launcher) -> None:
    """`freeze` on hosts: shop-2 hangs for 15 s (SIGSTOP: its kernel still takes
    connections, nothing answers). nginx's bounded read timeout resends what it
    sent there, and the watchdog beside each nginx takes shop-2 out of rotation;
    `thaw` brings it back."""
    with shoppers(cluster) as load:
        wait_for_requests(load, 200, "before the freeze")
        cluster.run("freeze", "shop-2")
        frozen = event_time(cluster, "freeze", "shop-2")
        wait_for_requests(load, LOAD_SHOPPERS * 40, "with shop-2 frozen")
        time.sleep(max(0.0, FREEZE_SECONDS - (time.time() - frozen)))  # the freeze lasts
        cluster.run("thaw", "shop-2")
        thawed = event_time(cluster, "thaw", "shop-2")
        procs.wait_until(
            lambda: any(s.served_by == "shop-2" and s.at > thawed for s in load.samples()),
            timeout=ROUTED_AROUND * 4, what="shop-2 to serve shoppers again",
        )  # fmt: skip
        wait_for_requests(load, 200, "after the thaw")
    report = load.report()
    back = min(s.at for s in report.samples if s.served_by == "shop-2" and s.at > thawed)
    out = [e.at for e in EventLog(cluster.workdir / "events.jsonl").read(since=frozen)
           if e.kind == "out" and e.target == "shop-2"]  # fmt: skip
    title = f"shop-2 frozen for {FREEZE_SECONDS:.0f} s under {LOAD_SHOPPERS} shoppers (hosts)"
    slowest = summary(cluster, load, report, frozen, "hosts-freeze", title)
    print(
        f"shop-2 out of rotation {out[0] - frozen:.2f} s after the freeze, serving again "
        f"{back - thawed:.2f} s after the thaw"
    )
    assert_clean(report, at_least=LOAD_SHOPPERS * 40)
    assert slowest.seconds <= SLOWEST, slowest
    assert out and out[0] - frozen <= ROUTED_AROUND
    assert back - thawed <= ROUTED_AROUND


def test_a_partition_between_an_app_host_and_redis_costs_fast_503s_at_most(
    cluster: Launcher,
) -> None:
    """app-2 keeps running but cannot reach Redis: its requests fail fast (503,
    bounded Redis timeouts) and the watchdog takes it out of rotation; `heal`
    brings it back. Nobody waits longer than the bound."""
    state = cluster.recorded_state()
    app2 = state.find("shop-2")
    with shoppers(cluster, think=0.05) as load:
        wait_for_requests(load, 200, "before the partition")
        cluster.run("partition", "app-2", "--from", "redis-1")
        cut = event_time(cluster, "partition", "app-2")
        started = time.monotonic()
        direct = requests.get(f"http://{app2.endpoint}/readyz", timeout=10)
        direct_seconds = time.monotonic() - started
        wait_for_requests(load, LOAD_SHOPPERS * 40, "with app-2 cut off from Redis")
        served_while_cut = load.served_by()["shop-2"]
        cluster.run("heal")
        healed = event_time(cluster, "heal", "network")
        wait_in_rotation(cluster.url, "shop-2")
        wait_for_requests(load, 200, "after heal")
    report = load.report()
    print(f"\napp-2 asked directly while cut off: {direct.status_code} in {direct_seconds:.2f} s")
    title = "app-2 cut off from redis-1 (partition), then healed"
    slowest = summary(cluster, load, report, cut, "hosts-partition", title)
    assert direct.status_code == 503 and direct_seconds <= SLOWEST
    failed = [s for s in report.samples if not s.ok]
    assert all(s.status == 503 and s.served_by == "shop-2" for s in failed), failed[:5]
    assert all(cut - 1 <= s.at <= healed for s in failed), failed[:5]
    assert slowest.seconds <= SLOWEST, slowest
    assert report.carts_match, report.mismatches[:3]
    assert load.served_by()["shop-2"] > served_while_cut  # back in rotation


def test_a_second_cluster_takes_the_next_24_and_down_cleans_up_after_a_crashed_up(
    cluster: Launcher, tmp_path: Path
) -> None:
    """Beside the module's cluster, a second one gets its own names and the next
    free /24. Its launcher is killed half-way through `up` (SIGKILL: no cleanup of
    its own); `down` still removes every namespace, link and process it made,
    from what the state file recorded before making it."""
    first = cluster.recorded_state().network
    # What is free now, the first cluster and anything else on this machine in
    # 198.18.0.0/15 (CI machines may use some of it) counted.
    expected = netns.free_subnet()
    second = Launcher(tmp_path / "second", hosts=True)
    argv, env = second.command("up", "--hosts", "--replicas", "1")
    up = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = second.workdir / "state.json"
    net_id = netns.network_id(second.workdir)
    try:

        def store_started() -> bool:
            state = State.from_json(state_file.read_text())
            return state.redis is not None and state.redis.alive()

        procs.wait_until(store_started, timeout=60, what="the second cluster's Redis")
        up.kill()  # the launcher dies mid-`up`: replicas and nginx not started yet
        up.wait(timeout=10)
        made = second.recorded_state()
        assert made.network.id == net_id != first.id
        assert made.network.subnet != first.subnet
        assert made.network.subnet == expected  # the next free /24
        assert {f"{net_id}-app-1", f"{net_id}-switch"} <= set(netns.namespaces())
        pids = second.recorded_pids()
        second.run("down")
        assert not [n for n in netns.namespaces() if n.startswith(net_id)]
        assert not netns.link_exists(made.network.client_link)
        assert leftovers(pids) == set()
        assert hosts_by_name(cluster)["lb-1"]["up"]  # the first cluster never noticed
    finally:
        if up.poll() is None:
            up.kill()
        second.run("down", check=False)
        netns.sweep(net_id)


def test_down_leaves_no_namespace_link_bridge_or_process(
    cluster: Launcher, before: set[str]
) -> None:
    state = cluster.recorded_state()
    pids = cluster.recorded_pids()
    cluster.run("down")
    # Every namespace of ours is gone. The list is not compared whole: other
    # suites on the machine make theirs meanwhile, other hosts clusters too
    # (named after their own workdirs).
    after = set(netns.namespaces())
    assert not any(n.startswith(state.network.id) for n in after)
    assert not any(n.startswith(state.network.id) for n in before)  # and they were not older
    assert not netns.link_exists(state.network.client_link)
    assert leftovers(pids) == set()
    # (No request to the virtual IP now: without the client link, the machine's
    # default route would carry it off to the real network.)
