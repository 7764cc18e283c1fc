"""Hung nodes, end to end through the launcher: `freeze` stops a process with
SIGSTOP, so the kernel still accepts its connections and buffers requests but
nothing answers, as with a machine in a swap storm or a deadlocked program.
Unlike a crash, nothing is refused or reset: nginx learns only from its own
timeouts (bounded in shop/cluster/nginx.conf.j2), and the watchdog beside it
takes the replica out of rotation.

One cluster serves the module; each test leaves it as it found it (everything
thawed, every replica in rotation). The freeze under load writes its timeline
chart to test-output/freeze-timeline.png.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from cluster_support import Launcher, leftovers, restoring, running_cluster

from shop.cluster import chart, procs
from shop.cluster.loadgen import LoadGenerator, SimulatedShopper, plentiful
from shop.cluster.timeline import Event, EventLog, Timeline

pytestmark = pytest.mark.cluster

REPLICAS = 3
SHOPPERS = 8
FREEZE_SECONDS = 15.0
# What a hung replica may cost a shopper: nginx's read timeout (3 s), then the
# request is answered by another replica; 5 s leaves room for a busy machine.
SLOWEST_ALLOWED = 5.0
# The watchdog's worst case is interval + fall x timeout = 1.5 s, plus a reload.
OUT_OF_ROTATION_WITHIN = 3.0
BACK_IN_ROTATION_WITHIN = 5.0
SLOW = 1.0  # a request this slow during the freeze was stuck on the hung replica
HUNG_WAIT = 2.5  # nearly nginx's 3 s read timeout: only a request sent to the hung replica


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    with running_cluster(tmp_path_factory.mktemp("freeze"), replicas=REPLICAS) as launcher:
        yield launcher


@pytest.fixture(autouse=True)
def as_promised(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test froze is thawed, and every replica is back in rotation."""
    yield from restoring(request, "cluster", REPLICAS)


def replica_row(cluster: Launcher, name: str) -> dict:
    return next(r for r in cluster.status()["replicas"] if r["name"] == name)


def events(cluster: Launcher, since: float) -> list[Event]:
    return EventLog(cluster.workdir / "events.jsonl").read(since=since)


def first(found: list[Event], kind: str, target: str) -> Event:
    matches = [e for e in found if e.kind == kind and e.target == target]
    assert matches, f"no {kind} {target} among {[e.label for e in found]}"
    return matches[0]


def decision(found: list[Event], kind: str, target: str) -> Event | None:
    """The watchdog's first `kind` ("out", "in") for `target`, if it made one."""
    return next((e for e in found if e.kind == kind and e.target == target), None)


def seconds_after(event: Event | None, since: Event) -> str:
    return f"{event.at - since.at:.2f} s" if event else "never"


def wait_back_in_rotation(cluster: Launcher, name: str, timeout: float = 15) -> None:
    procs.wait_until(
        lambda: replica_row(cluster, name)["in_rotation"], timeout=timeout, what=f"{name} back"
    )


# ---------------------------------------------------------------------------
def test_freezing_a_replica_under_load_costs_each_shopper_one_short_stall(
    cluster: Launcher, request: pytest.FixtureRequest
) -> None:
    victim = "shop-2"
    # The load ends when the test has seen it all (the duration only bounds it).
    load = LoadGenerator(cluster.url, SHOPPERS, duration=FREEZE_SECONDS + 60, max_requests=5000)
    with load:
        time.sleep(3)
        cluster.run("freeze", victim)
        frozen_at = first(events(cluster, load.started_wall), "freeze", victim).at
        time.sleep(max(0.0, FREEZE_SECONDS / 2 - (time.time() - frozen_at)))
        during = replica_row(cluster, victim)  # what `status` says of it, mid-freeze
        time.sleep(max(0.0, FREEZE_SECONDS - (time.time() - frozen_at)))
        cluster.run("thaw", victim)
        thawed = time.time()
        procs.wait_until(
            lambda: any(s.served_by == victim and s.at > thawed for s in load.samples()),
            timeout=BACK_IN_ROTATION_WITHIN + 5,
            what=f"{victim} to serve shoppers again",
        )
        time.sleep(3)
    report = load.report()
    found = events(cluster, load.started_wall)
    frozen, thaw = first(found, "freeze", victim), first(found, "thaw", victim)
    # What the watchdog did (None without one: then the asserts below say what it costs).
    out, back_in = decision(found, "out", victim), decision(found, "in", victim)
    out_at = out.at if out else frozen.at + OUT_OF_ROTATION_WITHIN
    served_again = min(s.at for s in report.samples if s.served_by == victim and s.at > thaw.at)
    # What the freeze cost: every request that was running at the freeze or came after
    # (the sign-ups before it hash passwords on a busy machine: slow for other reasons).
    since_freeze = [s for s in report.samples if s.at + s.seconds >= frozen.at]
    slowest = max(since_freeze, key=lambda s: s.seconds)
    # Requests that waited on the frozen replica before it was out of rotation: slow,
    # and running at the freeze or started before the watchdog's reload.
    stalled = [
        s for s in report.samples
        if s.seconds > SLOW and s.at + s.seconds > frozen.at and s.at <= out_at + 0.5
    ]  # fmt: skip
    # Once out of rotation it must cost nobody anything. Without the watchdog nginx
    # sends it a live request again every fail_timeout (5 s), which waits out the
    # 3 s read timeout: that wait, not a busy machine's second, is what counts here.
    late = [
        s for s in report.samples
        if s.seconds >= HUNG_WAIT and out_at + 0.5 < s.at < thaw.at
    ]  # fmt: skip
    stuck = Counter(s.shopper for s in stalled)
    longest_stall = max((s.seconds for s in stalled), default=0.0)
    # The first seconds are the shoppers' sign-ups: slow on purpose (scrypt), not the freeze.
    signed_up = Event(load.shopping_wall, "load", "shoppers", f"{SHOPPERS} shoppers signed up")
    guarded = "watchdog on" if cluster.status()["watchdogs"] else "no watchdog"
    files = chart.save(
        Timeline(report.samples, [signed_up, *found], title=f"{victim} frozen for "
                 f"{FREEZE_SECONDS:.0f} s under {SHOPPERS} shoppers ({REPLICAS} replicas, "
                 f"{guarded})"),
        request.config.rootpath / "test-output", "freeze-timeline",
    )  # fmt: skip
    print(
        f"\n{report.requests} requests by {SHOPPERS} shoppers, {len(report.failures)} failed "
        f"({report.resent} resent after a reset, {report.cut_off} after an answer cut off), "
        f"carts match: {report.carts_match}; slowest since the freeze {slowest.seconds:.2f} s "
        f"({slowest.what}; of the whole run, sign-ups included: {report.slowest.seconds:.2f} s); "
        f"{len(stuck)} shoppers stuck > {SLOW:.0f} s ({sum(stuck.values())} requests, the "
        f"longest {longest_stall:.2f} s), all started within "
        f"{max((s.at - frozen.at for s in stalled), default=0):.2f} s of the freeze; "
        f"{len(late)} requests waited on it later; {victim} out of rotation "
        f"{seconds_after(out, frozen)} after the freeze, back in {seconds_after(back_in, thaw)} "
        f"after the thaw, serving again after {served_again - thaw.at:.2f} s\n{files.note}"
    )
    assert report.failures == [], report.failures[:5]
    assert report.carts_match, report.mismatches[:3]
    assert slowest.seconds <= SLOWEST_ALLOWED
    assert late == [], f"waited on {victim} after it should have been out: {late[:3]}"
    assert during["frozen"] and during["alive"] and not during["ready"], during
    assert not during["in_rotation"], during
    assert out is not None and out.at - frozen.at <= OUT_OF_ROTATION_WITHIN
    assert max(stuck.values(), default=0) <= 1, stuck  # a hung replica costs a shopper once
    if os.geteuid() == 0:
        # As root the watchdog aborts the connections to the replica it takes out, so
        # the requests waiting on it are resent then, not at nginx's 3 s timeout.
        assert longest_stall <= out.at - frozen.at + 1.0
    assert back_in is not None and served_again - thaw.at <= BACK_IN_ROTATION_WITHIN
    assert replica_row(cluster, victim)["ready"]


def nginx_upstreams(cluster: Launcher, request_id: str) -> tuple[list[str], list[str]]:
    """The replicas nginx tried for one request, and their statuses, from its access log."""
    log = (cluster.workdir / "logs" / "nginx-access.log").read_text()
    line = re.search(rf"rid={request_id} upstream=(.+?) ustatus=(.+?) rt=", log)
    assert line, f"request {request_id} not in nginx's access log"
    return line.group(1).split(", "), line.group(2).split(", ")


def test_a_post_left_in_a_frozen_replicas_socket_is_applied_once(cluster: Launcher) -> None:
    """nginx gives up on the frozen replica after its read timeout and resends the
    POST, same Idempotency-Key, to another one, which applies it. When the frozen
    replica is thawed it reads its own stale copy from the socket and handles it
    too: the shop answers that copy from the first result and adds nothing."""
    shopper = SimulatedShopper(cluster.url)
    shopper.sign_up()
    product = plentiful(shopper.products(), 1)[0]["id"]
    victim = "shop-2"
    victim_port = replica_row(cluster, victim)["port"]
    # Only nginx's own mechanics here: the watchdog would take the replica out
    # before the burst below could reach it.
    cluster.run("freeze", "watchdog")
    cluster.run("freeze", victim)
    try:

        def add(key: str) -> requests.Response:
            body = {"product_id": product, "qty": 1}
            return shopper.session.post(
                f"{cluster.url}/api/cart/items", json=body, headers={"Idempotency-Key": key},
                timeout=15,
            )  # fmt: skip

        # At once, so round robin gives the frozen replica its share before
        # its first timeout sets it aside.
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(add, [uuid.uuid4().hex for _ in range(6)]))
        assert [a.status_code for a in answers] == [201] * 6
        resent = {}
        for answer in answers:
            # nginx's id (the replica echoes it too: the header comes twice)
            request_id = answer.headers["X-Request-ID"].split(",")[0]
            tried, statuses = nginx_upstreams(cluster, request_id)
            if tried[0].endswith(f":{victim_port}"):
                resent[request_id] = answer
                assert statuses[0] == "504" and statuses[-1] == "201", (tried, statuses)
                assert answer.headers["X-Served-By"] != victim
        seconds = sorted(round(a.elapsed.total_seconds(), 2) for a in resent.values())
        print(f"\n{len(resent)} of 6 POSTs reached the frozen {victim}, resent: {seconds} s")
        assert resent, "round robin sent none of the burst to the frozen replica"
        assert all(2.5 <= s <= SLOWEST_ALLOWED for s in seconds)
        assert shopper.cart() == {product: 6}
    finally:
        cluster.run("thaw", victim)
        cluster.run("thaw", "watchdog")
    victim_log = cluster.workdir / "logs" / f"{victim}.log"
    procs.wait_until(  # it handles the stale copies as soon as it runs again
        lambda: all(rid in victim_log.read_text() for rid in resent),
        timeout=15,
        what=f"{victim} to handle its stale copies",
    )
    assert shopper.cart() == {product: 6}  # still: the stale copies were replays
    replays = requests.get(f"http://{procs.LOOPBACK}:{victim_port}/metrics", timeout=5).text
    assert re.search(r'shop_idempotent_replays_total\{script="[^"]+"\} [1-9]', replays)
    wait_back_in_rotation(cluster, victim)


def test_status_shows_a_frozen_process_and_the_verbs_refuse_nonsense(cluster: Launcher) -> None:
    cluster.run("freeze", "shop-3")
    try:
        row = replica_row(cluster, "shop-3")
        assert row["alive"] and row["frozen"] and not row["ready"], row
        table = cluster.run("status").stdout
        assert re.search(r"shop-3\s.*\bfrozen\b", table), table
        again = cluster.run("freeze", "shop-3", check=False)
        assert again.returncode == 1 and "already frozen" in again.stderr
        start = cluster.run("start", "shop-3", check=False)
        assert start.returncode == 1 and "thaw shop-3" in start.stderr
        procs.wait_until(
            lambda: "shop-3 OUT of rotation" in cluster.run("status").stdout,
            timeout=10,
            what="the watchdog's decision in the status table",
        )
    finally:
        cluster.run("thaw", "shop-3")
    row = replica_row(cluster, "shop-3")
    assert not row["frozen"]
    not_frozen = cluster.run("thaw", "shop-3", check=False)
    assert not_frozen.returncode == 1 and "not frozen" in not_frozen.stderr
    assert "Traceback" not in again.stderr + start.stderr + not_frozen.stderr
    wait_back_in_rotation(cluster, "shop-3")
    assert replica_row(cluster, "shop-3")["ready"]


def test_a_frozen_store_is_a_fast_503_and_no_replica_leaves_rotation(cluster: Launcher) -> None:
    shopper = SimulatedShopper(cluster.url)
    shopper.sign_up()
    cluster.run("freeze", "redis")
    try:
        timings = []
        for _ in range(6):
            started = time.monotonic()
            answer = requests.get(f"{cluster.url}/api/cart", cookies=shopper.session.cookies,
                                  timeout=30)  # fmt: skip
            timings.append(time.monotonic() - started)
            assert answer.status_code == 503 and answer.json()["error"] == "store_unavailable"
            assert answer.headers["Retry-After"]
        print(f"\n503s while Redis is frozen took {', '.join(f'{t:.2f}' for t in timings)} s")
        # One Redis socket timeout (1 s), never retried; nginx (3 s) lets it through.
        assert max(timings) < 2.0
        procs.wait_until(
            lambda: "stay in rotation" in cluster.status()["watchdogs"][0]["note"],
            timeout=10,
            what="the watchdog to see every replica fail",
        )
        assert all(r["in_rotation"] for r in cluster.status()["replicas"])
    finally:
        cluster.run("thaw", "redis")
    procs.wait_until(
        lambda: shopper.request("GET", "/api/cart") is not None, timeout=15, what="the shop back"
    )
    assert shopper.must("GET", "/api/me").json()["username"] == shopper.name


# ---------------------------------------------------------------------------
def test_down_stops_a_cluster_whose_processes_are_frozen(tmp_path: Path) -> None:
    with running_cluster(tmp_path / "c", replicas=1) as launcher:
        for name in ("watchdog", "shop-1", "nginx", "redis"):
            launcher.run("freeze", name)
        pids = launcher.recorded_pids()
        pids |= set().union(*(procs.group_pids(pid) for pid in pids))
        started = time.monotonic()
        launcher.run("down", timeout=60)
        took = time.monotonic() - started
    print(f"\ndown of a frozen cluster took {took:.1f} s")
    assert leftovers(pids) == set()
    assert took < 30  # SIGCONT with the SIGTERM: no process waits out a kill timeout
