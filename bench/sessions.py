"""The session variants, side by side: throughput, latency, Redis cost, bytes.

Method (why each step is there):

1. All variants run at once, each behind its own nginx (the cluster's config,
   one upstream), and share one redis-server, so a repetition visits every
   variant within a few seconds of the others.
2. Each variant gets a pool of pre-created logged-in sessions (one per wrk
   connection); wrk carries their cookies, so every request finds a session.
3. Round trips are counted once per variant and endpoint in a short,
   sequential pass under MONITOR (see `measure.RoundTripCounter`); under load,
   INFO commandstats gives commands per request as a cross-check.
4. Throughput: `reps` repetitions; in each, every (endpoint, variant) pair is
   run once, in an order rotated from one repetition to the next, and wrk
   against a static nginx answer runs too (the generator's own ceiling).
   Ratios are taken within a repetition (side by side), then the median.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests

from . import measure, profile
from .apps import REDIS_VARIANTS, VARIANTS, create_app
from .stack import GUNICORN_SETTINGS, STATIC_PATH, Stack, running_stack

ENDPOINTS = {"read": ("GET", "/read"), "write": ("POST", "/write")}
CALIBRATION_REQUESTS = 50

# Targets from issue 16: printed against the figures, never asserted.
TARGET_READ_VS_NOREFRESH = 1.1
TARGET_WRITE_VS_DEFAULTS = 1.1
TARGET_WRITE_VS_NOREFRESH = 1.0
TARGET_BYTES_VS_FLASK_SESSION = 1.25
TARGET_READ_TRIPS = 1
TARGET_SHOP_TRIPS = 2


@dataclass(frozen=True)
class SessionBenchConfig:
    """How long and how hard; `quick()` is for development and the smoke test."""

    duration: float = 6.0
    reps: int = 3
    connections: int = 32
    variants: tuple[str, ...] = VARIANTS

    @classmethod
    def quick(cls) -> SessionBenchConfig:
        return cls(duration=2.0, reps=3)


Progress = Callable[[str], None]


def create_sessions(stack: Stack, variant: str, count: int) -> list[str]:
    """Log `count` shoppers in; return their Cookie header values."""
    if variant == "bare":
        # No session to create; send a cookie of the usual size all the same.
        return [f"session={'x' * 43}"] * count
    cookies = []
    for n in range(count):
        resp = requests.post(stack.url(variant, f"/login?n={n}"), timeout=5)
        resp.raise_for_status()
        if not resp.cookies:
            raise RuntimeError(f"{variant}: /login set no cookie")
        cookies.append("; ".join(f"{k}={v}" for k, v in resp.cookies.items()))
    return cookies


def bytes_per_session(stack: Stack, variant: str, cookies: list[str]) -> dict[str, Any]:
    """Redis bytes per logged-in session (MEMORY USAGE summed over the variant's
    database, so indexes count too) and the cookie's size."""
    cookie_bytes = statistics.median(len(c) for c in cookies)
    client = stack.variant_redis(variant)
    if client is None:
        return {"redis_bytes": 0, "keys_per_session": 0, "cookie_bytes": cookie_bytes}
    keys = list(client.scan_iter(count=1000))
    sizes = {key: client.memory_usage(key, samples=0) or 0 for key in keys}
    # sessionstore's per-user indexes, apart, so the report can say where bytes go.
    index = sum(size for key, size in sizes.items() if b":user:" in key)
    return {
        "redis_bytes": round(sum(sizes.values()) / len(cookies)),
        "index_bytes": round(index / len(cookies)),
        "keys_per_session": round(len(keys) / len(cookies), 2),
        "cookie_bytes": cookie_bytes,
    }


def count_round_trips(stack: Stack, variant: str, cookie: str) -> dict[str, dict[str, Any]]:
    """Per endpoint: round trips (Redis's read events, so a pipeline counts once),
    and from a MONITOR pass the commands sent and those run inside scripts, per request."""
    result: dict[str, dict[str, Any]] = {}
    admin = stack.redis()
    by_count = measure.RoundTripsByCount(admin)
    by_count.calibrate(1.0)  # nothing else talks to this Redis: about 0, measured anyway
    n = CALIBRATION_REQUESTS
    try:
        with requests.Session() as http:
            for endpoint, (method, path) in ENDPOINTS.items():
                url, headers = stack.url(variant, path), {"Cookie": cookie}

                def send(url: str = url, headers: dict = headers, method: str = method) -> None:
                    for _ in range(n):
                        http.request(method, url, headers=headers, timeout=5).raise_for_status()

                for _ in range(30):  # warm: connections open, scripts loaded
                    http.request(method, url, headers=headers, timeout=5).raise_for_status()
                trips = by_count.per_request(send, n)
                counter = measure.RoundTripCounter(stack.redis_port)
                with counter.watching():
                    send()
                s = counter.summary()
                result[endpoint] = {
                    "trips": trips,
                    "commands": (sum(s["sent"].values()) + sum(s["in_scripts"].values())) / n,
                    "sent": {k: v / n for k, v in sorted(s["sent"].items())},
                    "in_scripts": {k: v / n for k, v in sorted(s["in_scripts"].items())},
                    "connection_setup": dict(s["setup"]),
                }
    finally:
        admin.close()
    return result


def _watch(stack: Stack, variant: str | None) -> measure.CpuWatch:
    groups: dict[str, Callable[[], set[int]]] = {
        "nginx": lambda: set().union(*(measure.tree_pids(p) for p in stack.nginx_pids.values())),
        "redis": lambda: {stack.redis_pid},
    }
    if variant is not None:
        pid = stack.gunicorn_pids[variant]
        groups = {"app": lambda: measure.group_of(pid), **groups}
    return measure.CpuWatch(groups)


def run_sessions(
    workdir: Path, config: SessionBenchConfig, progress: Progress = print
) -> dict[str, Any]:
    """Run the whole session benchmark; returns the raw runs and their summary."""
    variants = config.variants
    with running_stack(workdir, variants) as stack:
        cookie_files: dict[str, Path] = {}
        sizes: dict[str, Any] = {}
        trips: dict[str, Any] = {}
        for variant in variants:
            progress(f"creating {config.connections} sessions for {variant}")
            cookies = create_sessions(stack, variant, config.connections)
            cookie_files[variant] = workdir / f"cookies-{variant}.txt"
            cookie_files[variant].write_text("\n".join(cookies) + "\n")
            sizes[variant] = bytes_per_session(stack, variant, cookies)
            if variant in REDIS_VARIANTS:
                progress(f"counting Redis round trips for {variant} (MONITOR pass)")
                trips[variant] = count_round_trips(stack, variant, cookies[0])

        progress("measuring each app's CPU per request in-process (test client)")
        inprocess = inprocess_cpu(stack, variants)
        runs: list[dict[str, Any]] = []
        admin = stack.redis()
        total = config.reps * (len(ENDPOINTS) * len(variants) + 1)
        done = 0
        for rep in range(config.reps):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            static = measure.run_wrk(
                stack.static_url,
                "session.lua",
                [str(cookie_files[variants[0]]), "GET", STATIC_PATH],
                duration=config.duration,
                connections=config.connections,
                watch=_watch(stack, None),
            )
            runs.append({"rep": rep, "variant": "static", "endpoint": "read", **static.as_dict()})
            done += 1
            progress(f"[{done}/{total}] rep {rep + 1} static nginx: {static.rps:,.0f} req/s")
            for endpoint, (method, path) in ENDPOINTS.items():
                for variant in order:
                    admin.config_resetstat()
                    result = measure.run_wrk(
                        stack.url(variant),
                        "session.lua",
                        [str(cookie_files[variant]), method, path],
                        duration=config.duration,
                        connections=config.connections,
                        watch=_watch(stack, variant),
                    )
                    calls = measure.command_calls(admin)
                    calls.pop("config|resetstat", None)
                    calls.pop("config", None)
                    calls.pop("info", None)
                    runs.append(
                        {
                            "rep": rep,
                            "variant": variant,
                            "endpoint": endpoint,
                            **result.as_dict(),
                            "redis_commands_per_request": round(
                                sum(calls.values()) / max(result.requests, 1), 3
                            ),
                        }
                    )
                    done += 1
                    progress(
                        f"[{done}/{total}] rep {rep + 1} {endpoint:5} {variant:24} "
                        f"{result.rps:8,.0f} req/s  p99 {result.p99_ms:6.1f} ms  "
                        f"errors {result.errors}"
                    )
        profiles = profile_variants(stack, cookie_files, config, progress)
    return {
        "config": config.__dict__ | {"variants": list(variants)},
        "profiles": profiles,
        "inprocess_us": inprocess,
        "gunicorn": " ".join(GUNICORN_SETTINGS),
        "sizes": sizes,
        "round_trips": trips,
        "runs": runs,
        "summary": summarize(runs, variants),
    }


PROFILED = ("bare", "flask_session_norefresh", "sessionstore")
INPROCESS_REQUESTS = 1000
INPROCESS_BATCHES = 5


def redis_cpu_seconds(client: redis.Redis) -> float:
    """CPU redis-server has used so far, user + system (INFO cpu, microsecond
    resolution where /proc's clock ticks are 10 ms)."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def inprocess_cpu(stack: Stack, variants: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """CPU microseconds per request of each variant's app alone, through Flask's
    test client in this process (no gunicorn, no nginx), and of redis-server
    meanwhile: medians over batches of 1,000, the variants interleaved batch by
    batch (order rotated), so each batch meets the same neighbours.

    The app's figure counts only this thread's CPU (time.thread_time), so
    neighbours on a shared machine slow it far less than they slow req/s: the
    steadiest view of what the session machinery itself costs the app, the
    client side of its Redis round trips included. Redis's own work is the
    second figure: together they are what a request costs besides HTTP."""
    old = os.environ.get("BENCH_REDIS_URL")
    os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{stack.redis_port}"
    admin = stack.redis()
    try:
        clients = {}
        for variant in variants:
            clients[variant] = create_app(variant).test_client()
            clients[variant].post("/login?n=999999")
        app_us: dict[tuple[str, str], list[float]] = {}
        redis_us: dict[tuple[str, str], list[float]] = {}
        for batch in range(INPROCESS_BATCHES):
            order = variants[batch % len(variants) :] + variants[: batch % len(variants)]
            for variant in order:
                client = clients[variant]
                for endpoint, (method, path) in ENDPOINTS.items():
                    for _ in range(100):  # warm: scripts loaded, connections open
                        client.open(path, method=method)
                    redis0, t0 = redis_cpu_seconds(admin), time.thread_time()
                    for _ in range(INPROCESS_REQUESTS):
                        client.open(path, method=method)
                    app = time.thread_time() - t0
                    server = redis_cpu_seconds(admin) - redis0
                    app_us.setdefault((variant, endpoint), []).append(app / INPROCESS_REQUESTS)
                    redis_us.setdefault((variant, endpoint), []).append(server / INPROCESS_REQUESTS)
        return {
            variant: {
                endpoint: round(statistics.median(app_us[variant, endpoint]) * 1e6, 1)
                for endpoint in ENDPOINTS
            }
            | {
                f"{endpoint}_redis": round(statistics.median(redis_us[variant, endpoint]) * 1e6, 1)
                for endpoint in ENDPOINTS
            }
            for variant in variants
        }
    finally:
        admin.close()
        if old is None:
            os.environ.pop("BENCH_REDIS_URL", None)
        else:
            os.environ["BENCH_REDIS_URL"] = old


def profile_variants(
    stack: Stack, cookie_files: dict[str, Path], config: SessionBenchConfig, progress: Progress
) -> dict[str, Any]:
    """One extra read run per profiled variant with py-spy attached (not counted in
    the figures: sampling slows the target): where each read request's CPU goes."""
    profiles: dict[str, Any] = {}
    for variant in (v for v in PROFILED if v in config.variants):
        out = stack.workdir / f"py-spy-{variant}.txt"
        sampler = profile.start(stack.gunicorn_pids[variant], config.duration, out)
        measure.run_wrk(
            stack.url(variant),
            "session.lua",
            [str(cookie_files[variant]), *ENDPOINTS["read"]],
            duration=config.duration,
            connections=config.connections,
        )
        profiles[variant] = profile.finish(sampler, out)
        progress(
            f"profiled {variant} read: {profiles[variant].get('by_library', profiles[variant])}"
        )
    return profiles


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else float("nan")


def summarize(runs: list[dict[str, Any]], variants: tuple[str, ...]) -> dict[str, Any]:
    """Medians per (endpoint, variant), and ratios taken within each repetition."""

    def pick(variant: str, endpoint: str) -> list[dict[str, Any]]:
        return [r for r in runs if r["variant"] == variant and r["endpoint"] == endpoint]

    def paired_ratio(endpoint: str, a: str, b: str) -> float:
        by_rep_b = {r["rep"]: r["rps"] for r in pick(b, endpoint)}
        ratios = [
            r["rps"] / by_rep_b[r["rep"]] for r in pick(a, endpoint) if by_rep_b.get(r["rep"])
        ]
        return _median(ratios)

    table: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        rows = {}
        for variant in variants:
            chosen = pick(variant, endpoint)
            if not chosen:
                continue
            rows[variant] = {
                "rps": _median([r["rps"] for r in chosen]),
                "p50_ms": _median([r["p50_ms"] for r in chosen]),
                "p99_ms": _median([r["p99_ms"] for r in chosen]),
                "errors": sum(r["errors"] for r in chosen),
                "commands_per_request": _median(
                    [r.get("redis_commands_per_request", 0) for r in chosen]
                ),
                "cpu": {
                    name: _median([r["cpu"].get(name, 0) for r in chosen])
                    for name in chosen[0]["cpu"]
                },
                "wrk_cpu": _median([r["wrk_cpu"] for r in chosen]),
                # CPU time the app's workers spent per request: much steadier than
                # req/s on a shared machine, since neighbours steal time, not work.
                "app_us_per_request": _median(
                    [r["cpu"].get("app", 0) * 1e6 / r["rps"] for r in chosen if r["rps"]]
                ),
                "vs_bare": paired_ratio(endpoint, variant, "bare") if "bare" in variants else None,
                "runs": [r["rps"] for r in chosen],
            }
        table[endpoint] = rows
    static = [r for r in runs if r["variant"] == "static"]
    ours_vs_fs = {
        endpoint: {
            other: paired_ratio(endpoint, "sessionstore", other)
            for other in ("flask_session", "flask_session_norefresh")
            if other in variants and "sessionstore" in variants
        }
        for endpoint in ENDPOINTS
    }
    return {
        "endpoints": table,
        "static": {
            "rps": _median([r["rps"] for r in static]),
            "wrk_cpu": _median([r["wrk_cpu"] for r in static]),
        },
        "ours_vs_flask_session": ours_vs_fs,
    }


def targets(
    result: dict[str, Any],
    shop: dict[str, Any] | None = None,
    instructions: dict[str, Any] | None = None,
) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each goal of issue 16 that the results cover."""
    s = result["summary"]
    vs = s["ours_vs_flask_session"]
    out: list[tuple[str, str, bool | None]] = []

    def ratio(endpoint: str, other: str, goal: float, label: str) -> None:
        value = vs.get(endpoint, {}).get(other)
        if value is not None:
            out.append((f"{label} >= {goal}x `{other}` (req/s)", f"{value:.2f}x", value >= goal))

    ratio("read", "flask_session_norefresh", TARGET_READ_VS_NOREFRESH, "read")
    ratio("write", "flask_session", TARGET_WRITE_VS_DEFAULTS, "write")
    ratio("write", "flask_session_norefresh", TARGET_WRITE_VS_NOREFRESH, "write")

    inproc = result.get("inprocess_us", {})
    ours = inproc.get("sessionstore", {})
    for endpoint, others in (
        ("read", ("flask_session_norefresh",)),
        ("write", ("flask_session", "flask_session_norefresh")),
    ):
        for other in others:
            theirs = inproc.get(other, {})
            if endpoint not in ours or endpoint not in theirs:
                continue
            strict = endpoint == "read" or other == "flask_session"
            mine, peer = ours[endpoint], theirs[endpoint]
            met = mine < peer if strict else mine <= peer
            out.append(
                (
                    f"in-process CPU per {endpoint} {'<' if strict else '<='} `{other}`'s "
                    "(Redis's beside it)",
                    f"{ours[endpoint]:,.0f} vs {theirs[endpoint]:,.0f} us "
                    f"(Redis {ours.get(endpoint + '_redis', 0):,.0f} vs "
                    f"{theirs.get(endpoint + '_redis', 0):,.0f} us)",
                    met,
                )
            )

    counted = (instructions or {}).get("instructions") or {}
    if "sessionstore" in counted:
        for endpoint, other in (
            ("read", "flask_session_norefresh"),
            ("write", "flask_session"),
            ("write", "flask_session_norefresh"),
        ):
            mine, peer = counted["sessionstore"][endpoint], counted[other][endpoint]
            out.append(
                (
                    f"CPU instructions per {endpoint} (counted, callgrind) < `{other}`'s",
                    f"{mine:,} vs {peer:,} ({peer / mine:.2f}x)",
                    mine < peer,
                )
            )

    trips = result["round_trips"].get("sessionstore", {}).get("read", {}).get("trips")
    if trips is not None:
        out.append((f"{TARGET_READ_TRIPS} Redis round trip per read", f"{trips:g}", trips <= 1))
    sizes = result["sizes"]
    if "flask_session" in sizes and "sessionstore" in sizes:
        ours_b = sizes["sessionstore"]["redis_bytes"]
        theirs_b = sizes["flask_session"]["redis_bytes"]
        out.append(
            (
                f"bytes per logged-in session <= {TARGET_BYTES_VS_FLASK_SESSION}x "
                "`flask_session`'s, user index included",
                f"{ours_b} vs {theirs_b} ({ours_b / theirs_b:.2f}x)",
                ours_b <= TARGET_BYTES_VS_FLASK_SESSION * theirs_b,
            )
        )
    if shop:
        worst = max((shop.get("round_trips", {}).get("current") or {}).items(),
                    key=lambda item: item[1], default=None)  # fmt: skip
        if worst is not None:
            endpoint, value = worst
            out.append(
                (
                    f"shop: at most {TARGET_SHOP_TRIPS} Redis round trips for any endpoint "
                    "of the mix",
                    f"{value:.1f} (the most: {endpoint})",
                    # An average of whole trips: the fraction is the background estimate's error.
                    round(value) <= TARGET_SHOP_TRIPS,
                )
            )
        base = shop.get("baseline") or {}
        for replicas, value in (base.get("vs_baseline") or {}).items():
            ours_rps = shop["summary"].get(replicas, {}).get("rps", 0)
            theirs_rps = base["summary"].get(replicas, {}).get("rps", 0)
            out.append(
                (
                    f"shop req/s, {replicas} replica(s), against `{base['commit']}` "
                    "(printed, no goal)",
                    f"{ours_rps:,.0f} vs {theirs_rps:,.0f} ({value:.2f}x)",
                    None,
                )
            )
    return out
