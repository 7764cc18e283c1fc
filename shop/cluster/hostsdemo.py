"""The acts of `shop-cluster demo --hosts`: machines die, not processes.

On hosts (`up --hosts`) a failure is a machine that stops answering: its
cable is pulled (packets vanish, nobody gets a reset), then its processes die.
After the shopper has filled a cart (demo.py's opening):

1. the app host that just served the shopper is powered off;
2. the load balancer holding the virtual IP is powered off: the address moves
   to the other one, and the demo says how long that took;
3. with `--redis ha`, the Redis primary's host is powered off: Sentinel
   promotes a replica and writes resume.

Each act ends with the shopper's cart checked, and each host is powered on
again (it rejoins: the replica in rotation, the load balancer as backup, the
Redis node as a replica). What was measured goes to the demo's summary.
"""

from __future__ import annotations

import time
from typing import Any

from . import ha, hosts, procs
from .launcher import Cluster
from .loadgen import quantities
from .procs import ClusterError
from .state import Proc

# How often the demo looks at who holds the address: the handover takes about
# 0.7 s, so 20 ms is fine-grained enough to time it.
VIP_POLL = 0.02
# Bounds on each wait of the story (each is a few seconds when all is well).
HANDOVER_TIMEOUT = 30.0
FAILOVER_TIMEOUT = 30.0
BACK_TIMEOUT = 60.0


def acts(cluster: Cluster, n: Any) -> tuple[bool, dict[str, str]]:
    """Play the acts after demo.py's opening; return (all went well, what was measured).

    `n` is demo.py's Narrator; its shopper has a cart by now.
    """
    measured: dict[str, str] = {}
    ok = _app_host_act(cluster, n, measured)
    ok = _balancer_act(cluster, n, measured) and ok
    if cluster.workdir.running().ha:
        ok = _primary_host_act(cluster, n, measured) and ok
    return ok, measured


def _timed_call(n: Any, method: str, path: str, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    response = n.call(method, path, **kwargs)
    seconds = time.monotonic() - started
    n.say(f"[dim]   answered in {seconds:.2f} s[/]")
    return response, seconds


def _check_cart(n: Any, before: dict[str, int], failover_since: float | None = None) -> bool:
    """The shopper's cart, as it should be after the act.

    After a store failover (`failover_since`: when the primary's host went off)
    a write acknowledged by one replica says nothing of the others: each finds
    the new primary on its own, answering fast 503s until then. The shopper
    reads again after each, as a browser would, until FAILOVER_TIMEOUT."""
    expect = (200,) if failover_since is None else (200, 503)
    deadline = (failover_since or 0.0) + FAILOVER_TIMEOUT
    response = _timed_call(n, "GET", "/api/cart", expect=expect)[0]
    while response.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
        response = _timed_call(n, "GET", "/api/cart", expect=expect)[0]
    if response.status_code != 200:
        n.say(f"[red]the cart could not be read: {response.status_code}[/]")
        return False
    after = quantities(response.json())
    intact = after == before
    n.say("cart intact ✔" if intact else f"[red]cart changed: {before} -> {after}[/]")
    return intact


# ------------------------------------------------------------------- act 1
def _app_host_act(cluster: Cluster, n: Any, measured: dict[str, str]) -> bool:
    shopper = n.shopper
    before = quantities(n.call("GET", "/api/cart").json())
    state = cluster.workdir.running()
    replica = state.find(shopper.last_served_by)
    host = hosts.host_of(state, replica)
    if host is None:
        raise ClusterError(f"{replica.name} runs on no host")
    n.step(f"{replica.name} on {host.name} just served them. Power {host.name} off")
    cluster.power_off(host.name)
    n.say(
        f"[red]{host.name} ({host.address}) is off[/]: cable pulled first, so packets to it "
        "vanish (no reset, no refusal), then every process on it died."
    )

    n.step("The shopper carries on")
    slowest = 0.0
    for path in ("/api/me", "/api/products"):
        slowest = max(slowest, _timed_call(n, "GET", path)[1])
    intact = _check_cart(n, before)
    measured[f"slowest shopper request, {host.name} off"] = f"{slowest:.2f} s"

    n.step(f"{host.name} boots again: {replica.name} starts afresh and rejoins")
    cluster.power_on(host.name)
    back = _wait_served_by(shopper, replica.name)
    name = replica.name
    n.say(f"[green]{name} serves again ✔[/]" if back else f"[red]{name} never served[/]")
    return intact and back


def _wait_served_by(shopper: Any, name: str) -> bool:
    deadline = time.monotonic() + BACK_TIMEOUT
    while time.monotonic() < deadline:
        shopper.must("GET", "/api/products")
        if shopper.last_served_by == name:
            return True
        time.sleep(0.2)
    return False


# ------------------------------------------------------------------- act 2
def _balancer_act(cluster: Cluster, n: Any, measured: dict[str, str]) -> bool:
    shopper = n.shopper
    before = quantities(n.call("GET", "/api/cart").json())
    state = cluster.workdir.running()
    holder = hosts.vip_holder(state)
    if holder is None:
        n.say("[red]no load balancer holds the virtual IP[/]")
        return False
    vip = state.network.vip
    n.step(f"{holder.name} holds the shop's address {vip}. Power it off")
    cut = time.monotonic()
    cluster.power_off(holder.name)
    moved_to = _wait_new_holder(cluster, holder.name)
    if moved_to is None:
        n.say(f"[red]{vip} did not move[/]")
        return False
    handover = time.monotonic() - cut
    cluster.events.record("vip", moved_to, label=f"address on {moved_to} (+{handover:.2f} s)")
    measured["virtual IP handover"] = f"{handover:.2f} s ({holder.name} → {moved_to})"
    n.say(
        f"[red]{holder.name} is off.[/] [green]{vip} moved to {moved_to} in {handover:.2f} s[/]: "
        "it missed 3 advertisements (0.2 s apart), took over and announced the address "
        "with gratuitous ARP."
    )

    n.step("The shopper carries on at the same address")
    resent = shopper.resent
    _timed_call(n, "GET", "/api/me")
    if shopper.resent > resent:
        n.say(
            f"its open connection had been to {holder.name}: {moved_to} answered it with a "
            "reset, and it resent the request once, as a browser does"
        )
    intact = _check_cart(n, before)

    n.step(f"{holder.name} boots again")
    cluster.power_on(holder.name)
    now = hosts.vip_holder(cluster.workdir.running())
    n.say(
        f"{holder.name} is back as the backup; {now.name if now else 'nobody'} keeps the "
        "address (no preemption: taking it back would reset every connection again)."
    )
    return intact and now is not None


def _wait_new_holder(cluster: Cluster, old: str) -> str | None:
    state = cluster.workdir.running()
    deadline = time.monotonic() + HANDOVER_TIMEOUT
    while time.monotonic() < deadline:
        holder = hosts.vip_holder(state)
        if holder is not None and holder.name != old:
            return holder.name
        time.sleep(VIP_POLL)
    return None


# ------------------------------------------------------------------- act 3
def _primary_host_act(cluster: Cluster, n: Any, measured: dict[str, str]) -> bool:
    state = cluster.workdir.running()
    primary = ha.current_primary(state)
    host = hosts.host_of(state, primary) if primary else None
    if primary is None or host is None:
        n.say("[red]no Redis primary is known[/]")
        return False
    before = quantities(n.call("GET", "/api/cart").json())
    n.step(f"{primary.name}, the Redis primary, runs on {host.name}. Power {host.name} off")
    n.say("Every write so far was acknowledged only once a Redis replica had it (WAIT).")
    cut = time.monotonic()
    cluster.power_off(host.name)
    n.say(f"[red]{host.name} is off[/], and with it {primary.name} and its Sentinel.")

    n.step("The two Sentinels left notice, agree (quorum 2) and promote a replica")
    promoted = _wait_for_promotion(cluster, primary)
    if promoted is None:
        n.say("[red]no replica was promoted[/]")
        return False
    failover = time.monotonic() - cut
    measured["Redis failover (a replica promoted)"] = f"{failover:.2f} s"
    cluster.events.record("failover", promoted, label=f"{promoted} promoted (+{failover:.2f} s)")
    n.say(f"[green]{promoted} is the primary now[/], {failover:.2f} s after the power-off.")
    spare = len(state.redis_nodes) - 2  # replicas left to acknowledge writes
    product = next(iter(before), None) or n.shopper.products()[0]["id"]
    if spare < 1:
        n.say(
            "With one Redis replica (--redis-replicas 1) none is left to acknowledge "
            f"writes: they wait for {primary.name} to be back as a replica."
        )
        _power_on_node(cluster, n, host.name, primary)
    added = _add_until_acknowledged(n, product, cut)
    if added is None:
        n.say("[red]writes did not resume[/]")
        return False
    measured["writes acknowledged again after the power-off"] = f"{added:.2f} s"
    n.say(f"[green]a write was acknowledged {added:.2f} s after the power-off[/]")
    before[product] = before.get(product, 0) + 1
    intact = _check_cart(n, before, failover_since=cut)
    if spare >= 1:
        _power_on_node(cluster, n, host.name, primary)
    return intact


def _wait_for_promotion(cluster: Cluster, old: Proc) -> str | None:
    """The name of the node the Sentinels promote in `old`'s place, or None."""
    deadline = time.monotonic() + FAILOVER_TIMEOUT
    while time.monotonic() < deadline:
        primary = ha.current_primary(cluster.workdir.running())
        if primary is not None and primary.name != old.name:
            return primary.name
        time.sleep(VIP_POLL * 5)
    return None


def _power_on_node(cluster: Cluster, n: Any, host: str, node: Proc) -> None:
    n.step(f"{host} boots again: {node.name} rejoins as a replica")
    cluster.power_on(host)
    password = cluster.workdir.redis_password()
    procs.wait_until(
        lambda: ha.node_info(node, password).link_up,
        timeout=BACK_TIMEOUT,
        what=f"{node.name} to sync",
    )
    n.say(f"{node.name} is a replica of the new primary, in sync ✔")


def _add_until_acknowledged(n: Any, product: str, since: float) -> float | None:
    """Add 1 of `product` (one Idempotency-Key, resent after each 503) until the shop
    acknowledges it; return the seconds since `since`, or None at the deadline."""
    shopper = n.shopper
    body = {"product_id": product, "qty": 1}
    key = f"demo-{shopper.name}-{since}"
    refused: list[float] = []
    while time.monotonic() < since + FAILOVER_TIMEOUT:
        started = time.monotonic()
        response = shopper.request(
            "POST", "/api/cart/items", json=body, expect=(201, 503), key=key
        )
        if response is not None and response.status_code == 201:
            if refused:
                n.say(
                    f"[yellow]{len(refused)} tries answered 503[/] first (the slowest in "
                    f"{max(refused):.2f} s), each resent with the same key"
                )
            return time.monotonic() - since
        refused.append(time.monotonic() - started)
        time.sleep(0.2)
    return None
