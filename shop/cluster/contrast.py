"""`shop-cluster demo --contrast`: the same kill, state in the replicas, then in Redis.

The tutorial this project grew from tells it as a failure first: the shopper
fills a cart on server 1.1, server 1.1 dies, the cart is gone and the shopper
is sent back to the login page. This runs that story twice, in two clusters
side by side (workdirs DIR/contrast-memory and DIR/contrast-redis, ports P
and P+1), told by the same code:

1. ``--state memory``: sessions and carts in each replica's memory, nginx's
   sticky hash keeping each client on one replica (shop/replicamemory.py);
2. ``--state redis``: everything in the shared Redis, round robin.

Each act: a narrated shopper logs in and fills a cart while background
shoppers (shop/cluster/loadgen.py) keep the cluster busy; the replica that
served the shopper is SIGKILLed; the act prints what the shopper sees next
and what the background shoppers lost (lost carts, forced re-logins, failed
requests). Then both summaries side by side. Both clusters are stopped at the
end, whatever happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ..formatting import money
from . import procs
from .demo import Narrator, background_load, summary
from .launcher import DEFAULT_REPLICAS, Cluster
from .loadgen import LoadGenerator, LoadReport, SimulatedShopper, quantities
from .state import STATE_MEMORY, STATE_REDIS, Workdir

# More than the plain demo's 4: sticky hashing spreads them by chance, and the
# replica killed should be keeping a few of them.
BACKGROUND_SHOPPERS = 6
# Every background shopper has shopped this much before the kill (so it holds
# a cart and a login to lose) and this much after it (so it has read its cart
# and asked who it is: a fifth of its steps are /api/me, a quarter its cart).
# Well within the load's own bounds (demo.background_load).
REQUESTS_BEFORE_KILL = 30
REQUESTS_AFTER_KILL = 40
# Those 70 requests at think 0.05 s take a few seconds; a minute covers two
# shared, busy cores many times.
LOAD_TIMEOUT = 60.0

TITLES = {
    STATE_MEMORY: "state in each replica's memory, sticky nginx",
    STATE_REDIS: "state in Redis, round robin",
}


@dataclass
class Act:
    """What one act showed: the shopper's view around the kill, and the background's."""

    app_state: str
    url: str
    victim: str  # the replica that served the shopper, then was killed
    cart_before: dict[str, int]
    total_before: int  # cents
    logged_in_after: bool
    cart_after: dict[str, int]
    on_victim: int  # background shoppers that replica was serving at the kill
    report: LoadReport

    @property
    def lost_nothing(self) -> bool:
        return self.logged_in_after and self.cart_after == self.cart_before

    @property
    def lost_everything(self) -> bool:
        """Logged out, and the cart empty: the shopper starts from nothing."""
        return not self.logged_in_after and not self.cart_after and bool(self.cart_before)

    def ending(self) -> str:
        if self.lost_nothing:
            return f"still logged in, cart intact ({sum(self.cart_after.values())} items)"
        login = "still logged in" if self.logged_in_after else "logged out"
        cart = "cart empty" if not self.cart_after else f"cart changed to {self.cart_after}"
        return f"{login}, {cart} (had {sum(self.cart_before.values())} items)"


@dataclass
class Contrast:
    memory: Act
    redis: Act

    @property
    def as_expected(self) -> bool:
        """The two endings the story is about: memory loses the shopper's login and
        cart, Redis loses nothing at all (not one background request or cart)."""
        return self.memory.lost_everything and self.redis.lost_nothing and self.redis.report.ok


def clusters(workdir: Workdir) -> dict[str, Cluster]:
    """The two clusters of the contrast, by state, in folders of `workdir`."""
    return {state: Cluster(Workdir(Path(workdir.path) / f"contrast-{state}")) for state in TITLES}


def run_contrast(
    workdir: Workdir, console: Console, *, port: int, replicas: int = DEFAULT_REPLICAS
) -> Contrast:
    """Start both clusters (ports `port`, `port` + 1), play both acts, print the two
    summaries side by side, stop both clusters; return what each act showed."""
    if replicas < 2:
        raise procs.ClusterError("the contrast needs at least 2 replicas: one to kill")
    pair = clusters(workdir)
    started: list[Cluster] = []
    try:
        with console.status(f"Starting two clusters of {replicas} replicas side by side…"):
            for offset, (state, cluster) in enumerate(pair.items()):
                cluster.up(replicas=replicas, port=port + offset, app_state=state)
                started.append(cluster)
        urls = {s: c.workdir.running().url for s, c in pair.items()}
        console.print(
            Panel.fit(
                "\n".join(f"[bold]{TITLES[s]}[/]: [cyan]{urls[s]}[/]" for s in pair)
                + "\nThe same story in each: a shopper fills a cart, and the replica"
                "\nserving them is killed, while "
                f"{BACKGROUND_SHOPPERS} simulated shoppers shop around them.",
                title="two clusters, one story",
            )
        )
        acts = {
            state: _act(cluster, console, f"Act {n}: {TITLES[state]}", state)
            for n, (state, cluster) in enumerate(pair.items(), start=1)
        }
    finally:
        with console.status("Stopping both clusters…"):
            for cluster in started:
                cluster.down()
    contrast = Contrast(memory=acts[STATE_MEMORY], redis=acts[STATE_REDIS])
    console.print(side_by_side(contrast))
    console.print("Both clusters have been stopped.")
    return contrast


def _act(cluster: Cluster, console: Console, title: str, app_state: str) -> Act:
    url = cluster.workdir.running().url.rstrip("/")
    console.rule(f"[bold]{title}[/]  {url}/")
    load = background_load(url, BACKGROUND_SHOPPERS)
    try:
        load.start()
        n = Narrator(console, SimulatedShopper(url))
        shopper = n.shopper
        n.step(f"{shopper.name} registers, logs in and fills a cart")
        n.sign_up()
        before = n.fill_cart()
        _wait_for_load(load, REQUESTS_BEFORE_KILL, "shopped before the kill")

        victim = shopper.last_served_by
        on_victim = sum(1 for s in load.shoppers if s.last_served_by == victim)
        n.step(f"{victim} served them. Kill it: SIGKILL to its whole process group")
        if app_state == STATE_MEMORY:
            n.say(f"{on_victim} of the {BACKGROUND_SHOPPERS} background shoppers are kept on it.")
        proc = cluster.kill(victim)
        n.say(f"[red]{victim} (pid {proc.pid}) is dead[/]: its memory is gone.")
        mark = {s.name: s.requests_made for s in load.shoppers}

        n.step("What the shopper sees next")
        me = n.call("GET", "/api/me", expect=(200, 401))
        logged_in = me.status_code == 200 and me.json().get("username") == shopper.name
        n.say(
            f"[green]still logged in as {shopper.name} ✔[/]"
            if logged_in
            else "[red]logged out[/]: the session was in the dead replica's memory"
        )
        after = quantities(n.call("GET", "/api/cart").json())
        if after == quantities(before):
            n.say(f"[green]cart intact ✔[/] ({money(before['total_cents'])})")
        else:
            n.say(f"[red]cart {'empty' if not after else 'changed: ' + str(after)}[/]")
        if not logged_in:
            n.call("POST", "/api/login", json=shopper.account)
            again = quantities(n.call("GET", "/api/cart").json())
            n.say(
                "logged in again: the cart is "
                + ("[red]still empty[/]: it died with " + victim if not again else str(again))
            )
        _wait_for_load(load, REQUESTS_AFTER_KILL, "shopped after the kill", mark)
        report = load.report()
    finally:
        load.stop()
    console.print(summary(report, title=f"background shoppers: {TITLES[app_state]}"))
    return Act(
        app_state=app_state,
        url=url,
        victim=victim,
        cart_before=quantities(before),
        total_before=before["total_cents"],
        logged_in_after=logged_in,
        cart_after=after,
        on_victim=on_victim,
        report=report,
    )


def _wait_for_load(
    load: LoadGenerator, count: int, what: str, since: dict[str, int] | None = None
) -> None:
    """Until every background shopper made `count` requests (after `since`)."""
    since = since or {}

    def done() -> bool:
        return all(s.requests_made - since.get(s.name, 0) >= count for s in load.shoppers)

    procs.wait_for(done, f"every background shopper to have {what}", timeout=LOAD_TIMEOUT)


def side_by_side(contrast: Contrast) -> Table:
    """Both acts in one table: the shopper's ending, then the background's counts."""
    memory, redis = contrast.memory, contrast.redis
    table = Table(title="The same kill, two designs", title_justify="left")
    table.add_column("")
    for act in (memory, redis):
        table.add_column(TITLES[act.app_state], justify="right")
    rows: list[tuple[str, Callable[[Act], str]]] = [
        ("the shopper's replica, killed", lambda a: a.victim),
        ("the shopper right after", Act.ending),
        ("background shoppers", lambda a: str(a.report.shoppers)),
        ("their requests", lambda a: str(a.report.requests)),
        ("lost carts", lambda a: _count(a.report.lost_carts)),
        ("forced re-logins", lambda a: _count(a.report.forced_logins)),
        ("failed requests", lambda a: _count(len(a.report.failures))),
    ]
    for label, value in rows:
        table.add_row(label, value(memory), value(redis))
    table.caption = (
        "As the story wants it: memory loses the shopper, Redis loses nothing."
        if contrast.as_expected
        else "[red]Not the expected contrast: see the acts above.[/]"
    )
    return table


def _count(value: int) -> str:
    return f"[green]{value}[/]" if not value else f"[red]{value}[/]"
