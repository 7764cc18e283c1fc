"""The cost of WAIT (SHOP_REPLICA_ACKS / SESSION_REPLICA_ACKS = 1) for the shop's writes.

Starts a real primary + replica on loopback, two shop apps on it (acks 0 and
acks 1) and drives cart adds through each in turn, interleaved round by round
(the machines are noisy), then prints medians and the ratio.

    .venv/bin/python scripts/wait_cost.py [--rounds 5] [--requests 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from shop import create_app
from shop.cluster import procs


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


def _run(client, count: int) -> tuple[float, float]:
    """`count` cart adds (each a domain write + a session write): (requests/s, p50 ms)."""
    product = client.get("/api/products").json[0]["id"]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        primary_port, replica_port = procs.free_port(), procs.free_port()
        primary = procs.start_redis(
            Path(tmp) / "p", primary_port, extra={"repl-diskless-sync-delay": "0"}
        )
        replica = procs.start_redis(
            Path(tmp) / "r", replica_port, extra={"replicaof": f"127.0.0.1 {primary_port}"}
        )
        try:
            url = f"redis://127.0.0.1:{primary_port}/0"
            clients = {acks: _app(url, acks) for acks in (0, 1)}
            procs.wait_until(
                lambda: (
                    clients[1].post("/api/cart/items", json={}).status_code == 400
                    and _run(clients[1], 1)[0] > 0
                ),
                timeout=20,
                what="the replica to keep up",
            )
            results: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
            for _ in range(args.rounds):
                for acks, client in clients.items():
                    results[acks].append(_run(client, args.requests))
            med = {
                acks: (
                    statistics.median(r for r, _ in runs),
                    statistics.median(p for _, p in runs),
                )
                for acks, runs in results.items()
            }
            for acks, (rps, p50) in med.items():
                print(f"acks={acks}: {rps:7.0f} cart adds/s   p50 {p50:.2f} ms")
            print(
                f"acks=1 / acks=0: throughput x{med[1][0] / med[0][0]:.2f}, "
                f"p50 +{med[1][1] - med[0][1]:.2f} ms "
                f"({args.rounds} interleaved rounds of {args.requests}, medians)"
            )
        finally:
            procs.stop_process(replica.pid, timeout=0)
            procs.stop_process(primary.pid, timeout=5)


if __name__ == "__main__":
    main()
