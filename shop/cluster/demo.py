"""`shop-cluster demo`: kill the replica that is serving a shopper, lose nothing.

A narrated walk through the failure semantics, naming the replica (from
X-Served-By) that answered each request, while a few simulated shoppers
(the same code the tests use) keep the cluster busy in the background.

On an HA cluster (`--redis ha`) a second act kills the store's primary:
Sentinel promotes a replica, requests get fast 503s meanwhile, writes are
acknowledged again with the old primary still dead (by the replica that is
left), the old primary comes back as a replica and the shopper's cart is intact.

On hosts (`--hosts`) the acts are machines powered off instead: the app
host that served the shopper, the load balancer holding the address, the
Redis primary's host (hostsdemo.py).

At the end it draws the background shoppers' requests and what was done to
the cluster as a timeline chart in the workdir (chart.py).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ..formatting import money
from . import chart, ha, hostsdemo, procs, status
from .launcher import DEFAULT_REPLICAS, Cluster
from .loadgen import (
    LoadGenerator,
    LoadReport,
    RequestFailed,
    SimulatedShopper,
    plentiful,
    quantities,
)
from .output import replica_sync
from .procs import ClusterError
from .timeline import Timeline

BACKGROUND_SHOPPERS = 4
# Bounds for the background load: it stops at the end of the story anyway.
BACKGROUND_SECONDS = 120.0
BACKGROUND_MAX_REQUESTS = 2000
# nginx sets a failed replica aside for fail_timeout (5 s), then probes it.
BACK_IN_ROTATION_TIMEOUT = 30.0


class Narrator:
    """Prints each step and each request with the replica that served it."""

    def __init__(self, console: Console, shopper: SimulatedShopper) -> None:
        self.console = console
        self.shopper = shopper
        self.step_number = 0

    def step(self, text: str) -> None:
        self.step_number += 1
        self.console.rule(f"[bold]{self.step_number}. {text}", align="left")

    def say(self, text: str) -> None:
        self.console.print(f"   {text}")

    def call(self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs: Any):
        """One request of the shopper, printed as: METHOD path -> status  (served by shop-N)."""
        response = self.shopper.must(method, path, expect=expect, **kwargs)
        colour = "green" if response.ok else "red"
        self.console.print(
            f"   [dim]{method:<6}[/]{path:<22} -> [{colour}]{response.status_code}[/]"
            f"  served by [bold cyan]{self.shopper.last_served_by}[/]"
        )
        return response

    def sign_up(self) -> None:
        """The shopper registers and logs in, each request printed."""
        self.call("POST", "/api/register", json=self.shopper.account, expect=(201,))
        self.call("POST", "/api/login", json=self.shopper.account)

    def fill_cart(self) -> dict[str, Any]:
        """Three lines of plentiful products; print the cart and return it as
        /api/cart answers."""
        products = plentiful(self.call("GET", "/api/products").json(), 3)
        for product, qty in zip(products, (2, 1, 1), strict=False):
            body = {"product_id": product["id"], "qty": qty}
            self.call("POST", "/api/cart/items", json=body, expect=(201,))
        cart = self.call("GET", "/api/cart").json()
        self.console.print(self.cart_table(cart))
        return cart

    def store_table(self, cluster: Cluster) -> None:
        """The Redis nodes now: which is primary, which replicas are in sync."""
        view = ha.status(cluster.workdir.running(), status.entry)
        table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
        for column in ("node", "role", "replication"):
            table.add_column(column)
        for node in view["nodes"]:
            role = node["role"]
            if role == "primary":
                sync = f"{view['replicas_in_sync']} replica(s) in sync"
            elif role == "replica":
                sync = replica_sync(node)
            else:
                sync = "-"
            colour = {"primary": "bold green", "down": "red"}.get(role, "")
            table.add_row(node["name"], f"[{colour}]{role}[/]" if colour else role, sync)
        self.console.print(table)

    def cart_table(self, cart: dict[str, Any]) -> Table:
        table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
        for column in ("product", "qty", "subtotal"):
            table.add_column(column, justify="left" if column == "product" else "right")
        for item in cart["items"]:
            table.add_row(item["name"], str(item["qty"]), money(item["subtotal_cents"]))
        table.add_row("[bold]total", "", f"[bold]{money(cart['total_cents'])}")
        return table


def run_demo(
    cluster: Cluster,
    console: Console,
    *,
    port: int | None = None,
    replicas: int = DEFAULT_REPLICAS,
    redis: str = "single",
    redis_replicas: int | None = None,
    with_watchdog: bool = True,
    on_hosts: bool = False,
) -> int:
    """Tell the story; return 0 if nothing was lost and no request failed
    (on an HA cluster: none but fast 503s while the store failed over).
    On hosts (`on_hosts`, or a running hosts cluster) the acts are machines
    powered off (hostsdemo.py) instead of processes killed."""
    existing = cluster.workdir.load()
    started_here = existing is None or not existing.any_alive()
    if started_here:
        with console.status(f"No cluster in {cluster.workdir}: starting {replicas} replicas…"):
            cluster.up(
                replicas=replicas,
                port=port,
                redis=redis,
                redis_replicas=redis_replicas,
                with_watchdog=with_watchdog,
                on_hosts=on_hosts,
            )
    state = cluster.workdir.running()
    if sum(1 for r in state.replicas if r.alive()) < 2:
        raise ClusterError("the demo needs at least 2 running replicas (shop-cluster scale 3)")
    url = state.url.rstrip("/")
    on_hosts = state.network is not None
    console.print(Panel.fit(_introduction(state, url), title=_title(on_hosts)))
    measured: dict[str, str] = {}
    load = background_load(url)
    try:
        load.start()
        try:
            narrator = Narrator(console, SimulatedShopper(url))
            if on_hosts:
                _opening(narrator)
                ok, measured = hostsdemo.acts(cluster, narrator)
            else:
                ok = _story(cluster, narrator, url)
                if state.ha:
                    ok = _store_act(cluster, narrator) and ok
        except RequestFailed as exc:
            console.print(f"   [bold red]unexpected answer:[/] {exc}")
            ok = False
        report = load.report()
    finally:
        load.stop()
        if started_here:
            with console.status("Stopping the cluster this demo started…"):
                cluster.down()
    console.print(summary(report, failover=state.ha, measured=measured))
    events = cluster.events.read(since=load.started_wall)
    timeline = Timeline(report.samples, events, title=f"shop-cluster {_title(on_hosts)}")
    console.print(chart.save(timeline, cluster.workdir.path, "demo-timeline").note)
    if started_here:
        console.print("The cluster this demo started has been stopped.")
    return 0 if ok and _clean(report, failover=state.ha) else 1


def _title(on_hosts: bool) -> str:
    return "demo --hosts: machines powered off" if on_hosts else "demo: kill a replica"


def _introduction(state: Any, url: str) -> str:
    if state.network is not None:
        front = (
            f"lb-1 and lb-2 share the address {state.network.vip} in front of "
            f"{len(state.replicas)} replicas;\nevery node is a host of its own"
        )
        victim = "powered-off host"
    else:
        front, victim = f"nginx in front of {len(state.replicas)} replicas", "killed replica"
    return (
        f"The shop at [bold cyan]{url}/[/]\n"
        f"{front}; every session and cart lives in Redis.\n"
        f"{BACKGROUND_SHOPPERS} simulated shoppers keep it busy meanwhile.\n"
        f"Open [bold cyan]{url}/cluster[/] in a browser:\n"
        f"watch the {victim} go and come back."
    )


def _opening(n: Narrator) -> dict[str, Any]:
    """The shopper registers, logs in and fills a cart; return the cart."""
    n.step(f"A shopper, {n.shopper.name}, registers and logs in")
    n.sign_up()
    n.step("They fill a cart (each POST carries an Idempotency-Key)")
    return n.fill_cart()


def background_load(url: str, shoppers: int = BACKGROUND_SHOPPERS) -> LoadGenerator:
    """The simulated shoppers who keep a demo's cluster busy (bounded: they stop
    at the end of the story anyway)."""
    return LoadGenerator(
        url,
        shoppers,
        duration=BACKGROUND_SECONDS,
        max_requests=BACKGROUND_MAX_REQUESTS,
        think=0.05,
    )


def _story(cluster: Cluster, n: Narrator, url: str) -> bool:
    shopper = n.shopper
    cart_before = _opening(n)

    victim = shopper.last_served_by
    n.step(f"{victim} just served them. Kill it: SIGKILL to its whole process group")
    proc = cluster.kill(victim)
    n.say(f"[red]{victim} (pid {proc.pid}) is dead[/]: no goodbye, its memory is gone.")

    n.step("The shopper carries on, unaware")
    me = n.call("GET", "/api/me").json()
    n.say(f"still logged in as [bold]{me['username']}[/]")
    cart_after = n.call("GET", "/api/cart").json()
    intact = quantities(cart_after) == quantities(cart_before)
    n.say("cart intact ✔" if intact else "[red]cart changed![/]")
    order = n.call("POST", "/api/checkout", expect=(201,)).json()
    n.say(f"order [bold]{order['order_id']}[/] placed, total {money(order['total_cents'])}")

    n.step(f"{victim} is started again")
    cluster.start(victim)
    n.say(f"{victim} is up and ready; nginx tries it again after its fail_timeout.")
    started = time.monotonic()
    tries = 0
    back = False
    while not back and time.monotonic() < started + BACK_IN_ROTATION_TIMEOUT:
        tries += 1
        shopper.must("GET", "/api/products")
        back = shopper.last_served_by == victim
        if not back:
            time.sleep(0.5)
    waited = f"{tries} requests, {time.monotonic() - started:.1f} s"
    n.say(
        f"[green]{victim} served request {tries}: back in rotation ✔[/] ({waited})"
        if back
        else f"[red]{victim} served none of {tries} requests[/] ({waited})"
    )
    return intact and back and not shopper.failures


def _store_act(cluster: Cluster, n: Narrator) -> bool:
    """Act two (HA only): kill the Redis primary under the shopper's feet.

    With two or more Redis replicas (the default) a replica is left to
    acknowledge writes, so they go on once Sentinel has promoted a node; with
    one, they wait until the old primary is back as a replica.
    """
    shopper = n.shopper
    n.step("A new cart, then the store's own primary is killed")
    product = plentiful(shopper.products(), 1)[0]
    n.call("POST", "/api/cart/items", json={"product_id": product["id"], "qty": 2}, expect=(201,))
    expected = quantities(n.call("GET", "/api/cart").json())
    n.say("Every write was acknowledged only after a Redis replica had it (WAIT):")
    n.store_table(cluster)
    proc = cluster.kill(ha.PRIMARY_ALIAS)
    killed = time.monotonic()
    n.say(f"[red]{proc.name}, the Redis primary (pid {proc.pid}), is dead.[/]")

    n.step(
        f"Sentinel notices ({ha.DOWN_AFTER_MS / 1000:g} s silent), agrees "
        f"({ha.QUORUM} of {ha.SENTINELS}), promotes a replica"
    )
    promoted = None
    while promoted in (None, proc) and time.monotonic() < killed + BACK_IN_ROTATION_TIMEOUT:
        response = shopper.request("GET", "/api/cart", expect=(200, 503))
        if response is not None and response.status_code == 503:
            n.say(
                f"[yellow]503[/] in {response.elapsed.total_seconds():.2f} s, "
                f"Retry-After: {response.headers.get('Retry-After')}  (fast, no hang)"
            )
        time.sleep(0.3)
        promoted = ha.current_primary(cluster.workdir.running())
    if promoted in (None, proc):
        n.say("[red]no failover happened[/]")
        return False
    n.say(f"[green]{promoted.name} is the primary now[/] ({time.monotonic() - killed:.1f} s).")

    state = cluster.workdir.running()
    survivors = [r for r in state.redis_nodes if r.alive() and r.name != promoted.name]
    writes_went_on = True
    if survivors:
        n.step(f"Writes go on with {proc.name} still dead")
        n.say(f"A replica of {promoted.name} is left to acknowledge them.")
        writes_went_on = _write_again(n, product["id"], killed)
        if writes_went_on:
            expected[product["id"]] += 1
        n.store_table(cluster)
    else:
        n.say("No replica is left to acknowledge writes: they get a fast 503 until")
        n.say(f"{proc.name} is back (`--redis-replicas 2`, the default, avoids this).")

    n.step(f"{proc.name} comes back and rejoins as a replica")
    cluster.start(proc.name)
    password = cluster.workdir.redis_password()
    procs.wait_until(
        lambda: ha.node_info(proc, password).link_up, timeout=30, what=f"{proc.name} to sync"
    )
    n.say(f"{proc.name} is a replica of {promoted.name}, in sync ✔")
    n.store_table(cluster)
    after = quantities(n.call("GET", "/api/cart").json())
    intact = after == expected
    n.say("cart intact ✔" if intact else f"[red]cart changed: {expected} -> {after}[/]")
    n.call("POST", "/api/cart/items", json={"product_id": product["id"], "qty": 1}, expect=(201,))
    n.say("writes are acknowledged ✔")
    return intact and writes_went_on


def _write_again(n: Narrator, product_id: str, killed: float) -> bool:
    """Add one item until the shop acknowledges it (one Idempotency-Key, so the
    add counts once however often it is sent); say how long after the kill."""
    key = uuid.uuid4().hex
    body = {"product_id": product_id, "qty": 1}
    while time.monotonic() < killed + BACK_IN_ROTATION_TIMEOUT:
        response = n.shopper.request(
            "POST", "/api/cart/items", json=body, expect=(201, 503), key=key
        )
        if response is not None and response.status_code == 201:
            n.say(
                f"[green]a cart write is acknowledged again[/], "
                f"{time.monotonic() - killed:.1f} s after the kill ✔"
            )
            return True
        time.sleep(0.2)
    n.say("[red]no write was acknowledged[/]")
    return False


def _clean(report: LoadReport, *, failover: bool) -> bool:
    """No failure at all, or (store failover) none but 503s; carts must match either way."""
    if not failover:
        return report.ok
    return report.carts_match and not _unexpected(report, True)


def _unexpected(report: LoadReport, failover: bool) -> list[str]:
    """Failures that were not the expected fast 503s of a store failover."""
    if not failover:
        return report.failures
    return [f for f in report.failures if "HTTP 503 " not in f]


def summary(
    report: LoadReport,
    *,
    failover: bool = False,
    title: str = "summary",
    measured: dict[str, str] | None = None,
) -> Panel:
    """What the background shoppers met: requests, failures, what the shop forgot;
    first what the story `measured` (the hosts demo's timings)."""
    table = Table(box=None, padding=(0, 2), show_header=False)
    for what, value in (measured or {}).items():
        table.add_row(what, value)
    table.add_row("background shoppers", str(report.shoppers))
    table.add_row("their requests", str(report.requests))
    failed = len(_unexpected(report, failover))
    table.add_row("failed requests", f"[green]{failed}[/]" if not failed else f"[red]{failed}[/]")
    if report.resent:
        table.add_row("resent on a fresh connection", f"{report.resent} (as a browser would)")
    if failover:
        fast = len(report.failures) - failed
        table.add_row("503s while the store failed over", f"[yellow]{fast}[/] (retried by key)")
    table.add_row("lost carts", _zero_is_green(report.lost_carts))
    table.add_row("forced re-logins", _zero_is_green(report.forced_logins))
    table.add_row(
        "every cart == acknowledged adds",
        "[green]yes[/]" if report.carts_match else "[red]no[/]",
    )
    spread = ", ".join(f"{k}: {v}" for k, v in sorted(report.served_by.items()))
    table.add_row("served by", spread)
    for line in (_unexpected(report, failover) + report.mismatches)[:5]:
        table.add_row("[red]problem", line)
    ok = _clean(report, failover=failover)
    return Panel.fit(table, title=title, border_style="green" if ok else "red")


def _zero_is_green(count: int) -> str:
    return f"[green]{count}[/]" if not count else f"[red]{count}[/]"


