"""What replica acknowledgements cost and buy the shop's writes: WAIT
(SHOP_REPLICA_ACKS / SESSION_REPLICA_ACKS = 1) and Redis's own write guard
(min-replicas-to-write, as the launcher's HA nodes have it).

Starts a real primary + replica on loopback and shop apps on it (in-process,
Flask's test client), then measures, interleaving the variants round by round
and rotating which goes first (the machines are noisy), and prints medians:

1. healthy: cart adds/s and p50 with no acks, with WAIT 1, and with WAIT 1
   plus the guard (CONFIG SET on the primary between runs);
2. replica dead (SIGKILL): how long a refused add takes and how many refused
   adds nevertheless changed the cart, WAIT alone against WAIT + guard;
3. replica frozen (SIGSTOP: a primary cut off without a connection reset):
   the same over a fixed time, and when the guard starts refusing.

    .venv/bin/python scripts/wait_cost.py [--rounds 5] [--requests 300]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from shop import create_app
from shop.cluster import ha, procs

PRODUCT_LIMIT = 99  # the shop's per-line limit: empty the line before it is reached
REFUSED_ADDS = 10  # per variant and round while no replica is in sync
FROZEN_SECONDS = 6.0  # how long the replica stays frozen per variant
SLOW_REFUSAL = 0.25  # a refusal this slow waited for WAIT (0.5 s); the guard's take ~1 ms


def _app(url: str, acks: int):
    app = create_app(
        {
            "REDIS_URL": url,
            "SECRET_KEY": "wait-cost-benchmark-only",
            "TESTING": True,
            "SHOP_REPLICA_ACKS": acks,
            "SESSION_REPLICA_ACKS": acks,
            "HEARTBEAT_INTERVAL": 0,
        }
    )
    return app.test_client()


def _guard(primary: redis.Redis, on: bool) -> None:
    primary.config_set("min-replicas-to-write", ha.MIN_REPLICAS_TO_WRITE if on else 0)
    primary.config_set("min-replicas-max-lag", ha.MIN_REPLICAS_MAX_LAG)


def _product(client) -> str:
    return client.get("/api/products").json[0]["id"]


def _qty(client, product: str) -> int:
    items = client.get("/api/cart").json["items"]
    return sum(item["qty"] for item in items if item["product_id"] == product)


def _healthy(client, count: int) -> tuple[float, float]:
    """`count` cart adds (each a domain write + a session write): (adds/s, p50 ms)."""
    product = _product(client)
    client.delete(f"/api/cart/items/{product}")
    times = []
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        response = client.post("/api/cart/items", json={"product_id": product, "qty": 1})
        if response.status_code == 400:  # line full: empty it and go on
            client.delete(f"/api/cart/items/{product}")
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    return count / total, statistics.median(times) * 1000


def _refused(client, *, count: int = 0, seconds: float = 0.0) -> tuple[list[float], int, int]:
    """Adds while no replica is in sync, `count` of them or for `seconds`:
    (seconds each refused add took, in order; adds refused; refused adds the
    cart shows anyway)."""
    product = _product(client)
    client.delete(f"/api/cart/items/{product}")  # room below the line limit (if allowed)
    before = _qty(client, product)
    took, acknowledged = [], 0
    deadline = time.monotonic() + seconds
    while len(took) + acknowledged < count or time.monotonic() < deadline:
        if _qty(client, product) >= PRODUCT_LIMIT:
            break
        t0 = time.perf_counter()
        status = client.post("/api/cart/items", json={"product_id": product, "qty": 1}).status_code
        if status == 201:
            acknowledged += 1
        else:
            assert status == 503, status
            took.append(time.perf_counter() - t0)
    applied = _qty(client, product) - before - acknowledged
    return took, len(took), applied


@contextmanager
def _replica(folder: Path, primary_port: int) -> Iterator[object]:
    port = procs.free_port()
    proc = procs.start_redis(folder, port, extra={"replicaof": f"127.0.0.1 {primary_port}"})
    try:
        yield proc
    finally:
        procs.stop_process(proc.pid, timeout=0)


def _wait_in_sync(primary: redis.Redis, clients: dict) -> None:
    procs.wait_until(
        lambda: (
            primary.info("replication")["connected_slaves"] == 1
            and clients["WAIT"].post("/api/cart/items", json={}).status_code == 400
            and primary.set("probe", 1)
            and primary.wait(1, 100) == 1
        ),
        timeout=20,
        what="the replica to keep up",
    )


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    logging.getLogger("shop").setLevel(logging.ERROR)  # a 503 per refused add is expected
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = procs.free_port()
        server = procs.start_redis(folder / "p", port, extra={"repl-diskless-sync-delay": "0"})
        primary = redis.Redis(port=port, socket_timeout=5, decode_responses=True)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            # WAIT with and without the guard is one app: only the server's setting differs.
            waiting = _app(url, 1)
            clients = {"no acks": _app(url, 0), "WAIT": waiting, "WAIT + guard": waiting}
            guarded = {"no acks": False, "WAIT": False, "WAIT + guard": True}

            # 1. Healthy: what each variant costs.
            with _replica(folder / "r1", port):
                _wait_in_sync(primary, clients)
                runs: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
                names = list(clients)
                for round_ in range(args.rounds):
                    turn = round_ % len(names)  # each variant goes first in turn
                    for name in names[turn:] + names[:turn]:
                        _guard(primary, guarded[name])
                        runs[name].append(_healthy(clients[name], args.requests))
            med = {
                name: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v))
                for name, v in runs.items()
            }
            print(f"1. healthy replica ({args.rounds} interleaved rounds of {args.requests} adds)")
            for name, (rps, p50) in med.items():
                print(f"   {name:<13} {rps:7.0f} adds/s   p50 {p50:.2f} ms")
            # Ratios taken round by round (the variants of a round ran side by
            # side), then their median: the machine's drift between rounds cancels.
            for a, b in (("WAIT", "no acks"), ("WAIT + guard", "WAIT")):
                ratios = [x[0] / y[0] for x, y in zip(runs[a], runs[b], strict=True)]
                print(
                    f"   {a} / {b}: x{statistics.median(ratios):.2f} adds/s "
                    f"(median of {len(ratios)} paired rounds, "
                    f"{min(ratios):.2f} to {max(ratios):.2f})"
                )

            # 2. The replica is dead: refusals, and whether they changed anything.
            refused = {"WAIT": ([], 0, 0), "WAIT + guard": ([], 0, 0)}
            with _replica(folder / "r2", port):
                _wait_in_sync(primary, clients)
            procs.wait_until(
                lambda: primary.info("replication")["connected_slaves"] == 0,
                timeout=10,
                what="the primary to notice the dead replica",
            )
            for _ in range(max(1, args.rounds // 2)):
                for name in refused:
                    _guard(primary, guarded[name])
                    took, count, applied = _refused(clients[name], count=REFUSED_ADDS)
                    total = refused[name]
                    refused[name] = (total[0] + took, total[1] + count, total[2] + applied)
            print("2. replica dead (SIGKILL)")
            for name, (took, count, applied) in refused.items():
                print(
                    f"   {name:<13} a refused add takes {_ms(took)} (median); "
                    f"{applied} of {count} refused adds changed the cart anyway"
                )

            # 3. The replica is frozen: no connection reset, the lag grows.
            print(f"3. replica frozen (SIGSTOP), adds for {FROZEN_SECONDS:.0f} s per variant")
            for name in ("WAIT", "WAIT + guard"):
                _guard(primary, guarded[name])
                with _replica(folder / f"r3-{guarded[name]}", port) as replica:
                    _wait_in_sync(primary, clients)
                    os.kill(replica.pid, signal.SIGSTOP)
                    try:
                        frozen = time.monotonic()
                        took, count, applied = _refused(clients[name], seconds=FROZEN_SECONDS)
                        good = primary.info("replication").get("min_slaves_good_slaves")
                    finally:
                        os.kill(replica.pid, signal.SIGCONT)
                waited = [t for t in took if t >= SLOW_REFUSAL]
                print(
                    f"   {name:<13} {count} adds refused in {time.monotonic() - frozen:.1f} s, "
                    f"{len(waited)} of them after waiting for WAIT's timeout "
                    f"({sum(waited):.1f} s in all); {applied} changed the cart anyway"
                    + ("" if good is None else f"; replicas in sync at the end: {good}")
                )
        finally:
            _guard(primary, False)
            primary.close()
            procs.stop_process(server.pid, timeout=5)


if __name__ == "__main__":
    main()
