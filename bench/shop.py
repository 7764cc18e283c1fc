"""The shop itself: a mixed shopping workload through 1, 2 and 3 replicas, and
against an older commit of the whole project, side by side.

The cluster is the real one, started and stopped by the launcher
(`shop-cluster up --replicas N --workdir ... --port ...` / `down`). Shoppers
register and log in through the JSON API; wrk then runs bench/lua/shop.lua
with their cookies. Stock is topped up before each run so checkouts keep
succeeding (a sold-out shop would measure cheap 409s). Replica counts are
interleaved over the repetitions like the session variants, and one run per
replica count is sampled by py-spy to show where the CPU goes.

With a baseline commit (`--baseline 7a3a909`), a git worktree of that commit
is checked out under the work folder and its own launcher runs its own shop
(its code first on PYTHONPATH, the same virtualenv), interleaved with this
tree's runs, so "faster than before" is measured on the same machine at the
same moment. Each version's Redis round trips per endpoint are counted from
Redis's read events (`measure.RoundTripsByCount`: pipelines count once).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests

from shop.cluster import procs
from shop.cluster.state import Workdir

from . import measure, profile

SHOPPERS = 8
PASSWORD = "bench-shopper-password"
REPO = Path(__file__).resolve().parent.parent
CURRENT = "current"
BASELINE = "baseline"
# The last commit before issue 16 (sessionstore ahead of Flask-Session on every
# path): the shop's requests/s are printed against it, measured in the same run.
BASELINE_COMMIT = "7a3a909"
# Sequential requests per endpoint when counting round trips: enough that the
# background (heartbeats) subtracted at its measured rate is a small error.
TRIP_REQUESTS = 100


@dataclass(frozen=True)
class ShopBenchConfig:
    replicas: tuple[int, ...] = (1, 2, 3)
    duration: float = 6.0
    reps: int = 3
    connections: int = 32
    baseline: str | None = None  # a git commit run side by side (its own launcher and shop)
    baseline_replicas: tuple[int, ...] = (1,)


def _cli(*args: str, source: Path | None = None, timeout: float = 120) -> str:
    """The launcher of this tree, or of `source` (another checkout) when given."""
    argv = [sys.executable, "-m", "shop.cluster.cli", *args]
    env = {**os.environ, "PYTHONPATH": str(source)} if source else None
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=source
    )
    if done.returncode != 0:
        raise RuntimeError(f"shop-cluster {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


# This tree's clusters run without the watchdog beside nginx (the baseline
# predates it): under a saturating load its 0.5 s health probes queue behind
# the requests, and it takes busy replicas out of rotation, so nginx answers
# 503 (measured on this machine: 379 of 835 requests through 3 replicas).
NO_WATCHDOG = ("--no-watchdog",)


@contextmanager
def cluster(workdir: Path, replicas: int, source: Path | None = None) -> Iterator[dict[str, Any]]:
    """`shop-cluster up` in its own workdir and port; `down` whatever happens."""
    port = procs.free_port()
    options = () if source else NO_WATCHDOG
    try:
        _cli(
            "up", "--replicas", str(replicas), "--workdir", str(workdir), "--port", str(port),
            *options, source=source,
        )  # fmt: skip
        yield json.loads(_cli("status", "--json", "--workdir", str(workdir), source=source))
    finally:
        _cli("down", "--workdir", str(workdir), source=source)


@contextmanager
def checkout(commit: str, where: Path) -> Iterator[Path]:
    """A git worktree of `commit` at `where` (this repository's history), removed after."""

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, timeout=60)

    git("worktree", "add", "--detach", str(where), commit)
    try:
        yield where
    finally:
        git("worktree", "remove", "--force", str(where))


def count_trips(
    status: dict[str, Any], cookie: str, product: str, version: str = CURRENT
) -> dict[str, float]:
    """Redis round trips per request of each endpoint of the workload, sent one
    after another by one logged-in shopper."""
    url = status["url"].rstrip("/")
    admin = admin_client(status, version)
    counter = measure.RoundTripsByCount(admin)
    counter.calibrate()
    with admin, requests.Session() as http:
        http.headers["Cookie"] = cookie

        def send(method: str, path: str, body: Any = None, times: int = TRIP_REQUESTS) -> None:
            for _ in range(times):
                headers = {"Idempotency-Key": uuid.uuid4().hex} if method == "POST" else {}
                http.request(method, url + path, json=body, headers=headers, timeout=10)

        add = ("POST", "/api/cart/items", {"product_id": product, "qty": 1})
        trips = {
            "GET /api/products": counter.per_request(
                lambda: send("GET", "/api/products"), TRIP_REQUESTS
            ),
            "POST /api/cart/items": counter.per_request(lambda: send(*add), TRIP_REQUESTS),
            "GET /api/cart": counter.per_request(lambda: send("GET", "/api/cart"), TRIP_REQUESTS),
        }

        def add_then_checkout() -> None:
            for _ in range(TRIP_REQUESTS):
                send(*add, times=1)
                send("POST", "/api/checkout", times=1)

        pairs = counter.per_request(add_then_checkout, TRIP_REQUESTS)
        trips["POST /api/checkout"] = round(pairs - trips["POST /api/cart/items"], 2)
    return trips


def prepare(status: dict[str, Any], workdir: Path) -> tuple[Path, Path]:
    """Log shoppers in and list the products; write wrk's cookie and product files."""
    url = status["url"].rstrip("/")
    cookies = []
    for n in range(SHOPPERS):
        with requests.Session() as http:
            name = f"bench{n}-{uuid.uuid4().hex[:8]}"
            creds = {"username": name, "password": PASSWORD}
            http.post(f"{url}/api/register", json=creds, timeout=30).raise_for_status()
            http.post(f"{url}/api/login", json=creds, timeout=30).raise_for_status()
            cookies.append("; ".join(f"{k}={v}" for k, v in http.cookies.items()))
    products = [p["id"] for p in requests.get(f"{url}/api/products", timeout=10).json()]
    (workdir / "cookies.txt").write_text("\n".join(cookies) + "\n")
    (workdir / "products.txt").write_text("\n".join(products) + "\n")
    return workdir / "cookies.txt", workdir / "products.txt"


def admin_client(status: dict[str, Any], version: str = CURRENT) -> redis.Redis:
    """A client of the cluster's Redis, with its password (the baseline's has none:
    it predates the per-cluster password)."""
    password = Workdir(status["workdir"]).redis_password() if version == CURRENT else None
    return redis.Redis(
        host=procs.LOOPBACK, port=int(status["redis"]["port"]), password=password, socket_timeout=10
    )


def top_up_stock(status: dict[str, Any], products: Path, version: str = CURRENT) -> None:
    """Plenty of stock for every product (the shop's own key for it), so checkouts succeed."""
    from shop import keys

    with admin_client(status, version) as client:
        ids = products.read_text().split()
        client.hset(keys.stock(), mapping=dict.fromkeys(ids, 10**9))


def _watch(status: dict[str, Any]) -> measure.CpuWatch:
    replica_pids = [r["pid"] for r in status["replicas"]]
    return measure.CpuWatch(
        {
            "replicas": lambda: set().union(*(measure.group_of(p) for p in replica_pids)),
            "nginx": lambda: measure.tree_pids(int(status["nginx"]["pid"])),
            "redis": lambda: {int(status["redis"]["pid"])},
        }
    )


def run_shop(
    workdir: Path, config: ShopBenchConfig, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Measure every replica count `reps` times (interleaved, and with the
    baseline commit's shop when asked); profile one run of each of ours."""
    with contextlib.ExitStack() as stack:
        sources: dict[str, Path | None] = {CURRENT: None}
        if config.baseline:
            try:
                sources[BASELINE] = stack.enter_context(
                    checkout(config.baseline, workdir / "baseline-src")
                )
            except (OSError, subprocess.SubprocessError) as exc:
                # Not a git checkout, or a shallow one: measure this tree alone.
                detail = getattr(exc, "stderr", b"") or str(exc)
                progress(f"shop: no baseline, cannot check out {config.baseline}: {detail!r}")
        return _measure(workdir, config, sources, progress)


def _measure(
    workdir: Path,
    config: ShopBenchConfig,
    sources: dict[str, Path | None],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    trips: dict[str, dict[str, float]] = {}
    slots = [(CURRENT, n) for n in config.replicas]
    if BASELINE in sources:
        # Right after our own run of the same replica count, so a pair shares its moment.
        for n in config.baseline_replicas:
            slots.insert(slots.index((CURRENT, n)) + 1 if (CURRENT, n) in slots else 0,
                         (BASELINE, n))  # fmt: skip
    for rep in range(config.reps):
        order = slots[rep % len(slots) :] + slots[: rep % len(slots)]
        for version, replicas in order:
            where = workdir / f"shop-{version}-r{replicas}-rep{rep}"
            with cluster(where, replicas, sources[version]) as status:
                cookie_file, product_file = prepare(status, where)
                top_up_stock(status, product_file, version)
                if version not in trips:
                    progress(f"shop: counting {version}'s Redis round trips per endpoint")
                    trips[version] = count_trips(
                        status,
                        cookie_file.read_text().split("\n")[0],
                        product_file.read_text().split()[0],
                        version,
                    )
                    top_up_stock(status, product_file, version)
                url = status["url"].rstrip("/")
                args = [str(cookie_file), str(product_file), uuid.uuid4().hex[:8]]
                # Warm-up: first requests load scripts and open pools.
                measure.run_wrk(url, "shop.lua", args, duration=1, connections=config.connections)
                sampler = None
                if rep == 0 and version == CURRENT:
                    sampler = profile.start(
                        status["replicas"][0]["pid"], config.duration, where / "py-spy.txt"
                    )
                result = measure.run_wrk(
                    url, "shop.lua", args, duration=config.duration,
                    connections=config.connections, watch=_watch(status),
                )  # fmt: skip
                if sampler is not None:
                    profiles[str(replicas)] = profile.finish(sampler, where / "py-spy.txt")
                runs.append(
                    {
                        "rep": rep,
                        "version": version,
                        "replicas": replicas,
                        **result.as_dict(),
                        "profiled": sampler is not None,
                    }
                )
                progress(
                    f"shop: rep {rep + 1} {version} {replicas} replica(s): {result.rps:,.0f} "
                    f"req/s p99 {result.p99_ms:.1f} ms, non-2xx/errors {result.errors}"
                )
            time.sleep(0.5)
    ours = [r for r in runs if r["version"] == CURRENT]
    theirs = [r for r in runs if r["version"] == BASELINE]
    return {
        "config": config.__dict__,
        "gunicorn_workers": int(os.environ.get("SHOP_WORKERS", "2")),
        "workload": (
            f"wrk, {config.connections} connections, {config.duration:g} s per run, "
            f"{config.reps} repetitions (replica counts interleaved); {SHOPPERS} logged-in "
            "shoppers; out of 20 requests: 10 `GET /api/products`, 5 `POST /api/cart/items` "
            "and 4 `GET /api/cart`, 1 `POST /api/checkout`, mutations with a unique "
            "Idempotency-Key. Runs sampled by py-spy (rep 1) are slower and marked *. "
            "Without the watchdog (`up --no-watchdog`; see bench/shop.py `NO_WATCHDOG`)."
        ),
        "runs": runs,
        "profiles": profiles,
        "round_trips": trips,
        "summary": summarize(ours, config.replicas),
        "baseline": (
            {
                "commit": config.baseline,
                "summary": summarize(theirs, config.baseline_replicas),
                "vs_baseline": paired_ratios(ours, theirs, config.baseline_replicas),
            }
            if theirs
            else None
        ),
    }


def paired_ratios(
    ours: list[dict[str, Any]], theirs: list[dict[str, Any]], counts: tuple[int, ...]
) -> dict[str, float]:
    """Per replica count: the median over repetitions of our req/s over the
    baseline's in the same repetition (unprofiled runs only)."""
    out = {}
    clean = [r for r in ours if not r["profiled"]] or ours  # --quick profiles every run
    for replicas in counts:
        base = {r["rep"]: r["rps"] for r in theirs if r["replicas"] == replicas}
        ratios = [
            r["rps"] / base[r["rep"]]
            for r in clean
            if r["replicas"] == replicas and base.get(r["rep"])
        ]
        if ratios:
            out[str(replicas)] = round(statistics.median(ratios), 3)
    return out


def summarize(runs: list[dict[str, Any]], counts: tuple[int, ...]) -> dict[str, Any]:
    """Median req/s per replica count over the unprofiled runs (all runs if none)."""
    out = {}
    for replicas in counts:
        mine = [r for r in runs if r["replicas"] == replicas]
        clean = [r for r in mine if not r["profiled"]] or mine
        out[str(replicas)] = {
            "rps": round(statistics.median(r["rps"] for r in clean), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in clean), 2),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in clean), 2),
            "errors": sum(r["errors"] for r in mine),
            "cpu": {
                k: round(statistics.median(r["cpu"][k] for r in clean), 2) for k in clean[0]["cpu"]
            },
            "wrk_cpu": round(statistics.median(r["wrk_cpu"] for r in clean), 2),
            "runs": [f"{r['rps']:,.0f}{'*' if r['profiled'] else ''}" for r in mine],
        }
    return out


SHOP_HEADER = [
    "replicas", "req/s (median)", "vs 1 replica", "p50 ms", "p99 ms",
    "CPU cores: replicas / nginx / redis / wrk / whole machine", "non-2xx + errors",
    "each run (req/s)",
]  # fmt: skip


def shop_rows(data: dict[str, Any]) -> list[list[Any]]:
    """Table rows for RESULTS.md."""
    s = data["summary"]
    base = s[min(s, key=int)]["rps"]
    rows = []
    for replicas, r in s.items():
        c = r["cpu"]
        rows.append([
            replicas, f"{r['rps']:,.0f}", f"{r['rps'] / base:.2f}x", r["p50_ms"], r["p99_ms"],
            f"{c['replicas']:.2f} / {c['nginx']:.2f} / {c['redis']:.2f} / {r['wrk_cpu']:.2f}"
            f" / {c.get('machine', 0):.2f}",
            r["errors"], " ".join(r["runs"]),
        ])  # fmt: skip
    return rows


def analysis(data: dict[str, Any]) -> str:
    """What bounds throughput, in words computed from the figures themselves."""
    s = data["summary"]
    cores = data["meta"].get("cores") or 2
    lines = ["What bounds it:", ""]
    for replicas, r in s.items():
        c = r["cpu"]
        ours = c["replicas"] + c["nginx"] + c["redis"] + r["wrk_cpu"]
        others = max(c.get("machine", 0) - ours, 0)
        lines.append(
            f"- {replicas} replica(s): the machine was {c.get('machine', 0) / cores:.0%} busy "
            f"({c.get('machine', 0):.2f} of {cores} cores); the replicas used {c['replicas']:.2f} "
            f"cores, nginx + redis + wrk {ours - c['replicas']:.2f}, other jobs on this "
            f"shared machine about {others:.2f}. Replica CPU per request: "
            f"{c['replicas'] * 1e6 / max(r['rps'], 1):,.0f} us."
        )
    lines += [
        "",
        f"Every replica runs {data.get('gunicorn_workers', 2)} gunicorn workers, so one "
        "replica can already keep both cores busy: more replicas add processes, not cores. "
        "Throughput is bounded by Python CPU in the replicas (the profile: HTTP handling in "
        "gunicorn and Werkzeug, Flask, redis-py's per-call cost, JSON), not by Redis "
        "(a small fraction of a core) or nginx. Beyond 2 cores' worth of replicas, more "
        "replicas only buy availability on this machine; on a bigger one they buy throughput.",
    ]
    return "\n".join(lines)
