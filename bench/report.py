"""RESULTS.md and the throughput chart, generated from the JSON each run saves.

Numbers are never typed by hand: every subcommand saves its raw runs under
bench/results/, and this module renders whatever is there, so a partial
re-run (say, only `scale`) keeps the other sections as they were measured.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
CHART = BENCH_DIR.parent / "docs" / "bench-throughput.png"


def save(name: str, data: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """Save one section's results with when, where and with what they were measured."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps({"meta": environment(), **data}, indent=1) + "\n")
    return path


def load(name: str, results_dir: Path = RESULTS_DIR) -> dict[str, Any] | None:
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def environment() -> dict[str, Any]:
    """Date, versions and machine: what a reader needs to weigh the numbers."""
    import subprocess

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (
            (out.stdout or out.stderr).strip().splitlines()[0]
            if (out.stdout or out.stderr)
            else "?"
        )

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    from shop.cluster.procs import find_binary

    packages = ["flask", "redis", "hiredis", "gunicorn", "Flask-Session", "werkzeug"]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "packages": {name: _pkg_version(name) for name in packages},
        "redis_server": version([find_binary("redis-server"), "--version"]),
        "nginx": version([find_binary("nginx"), "-v"]),
        "wrk": version(["wrk", "-v"]),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg()[0],
    }


def _pkg_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _inproc(us: float | None, bare_us: float | None, redis_us: float | None = None) -> str:
    if us is None:
        return "-"
    text = f"{us:,.0f} ({bare_us / us:.2f}x)" if bare_us else f"{us:,.0f}"
    return text if redis_us is None else f"{text} / {redis_us:,.0f}"


def _measured(data: dict[str, Any]) -> str:
    return f"Measured {data['meta']['date']} by `{data.get('command', '')}`"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def targets_section(
    sessions: dict[str, Any] | None,
    shop: dict[str, Any] | None,
    instructions: dict[str, Any] | None = None,
) -> str:
    """Issue 16's goals against the figures below (printed, not asserted)."""
    from .sessions import targets

    if sessions is None:
        return ""
    measured = targets(sessions, shop, instructions)
    rows = [[t, m, {True: "yes", False: "**no**", None: "-"}[ok]] for t, m, ok in measured]
    notes = missed_notes(sessions, instructions, {t for t, _, ok in measured if ok is False})
    return "\n".join(
        [
            "## Targets (issue 16; printed, not asserted)",
            "",
            _table(["target", "measured", "met"], rows),
            "",
            *([instructions_table(instructions), ""] if instructions else []),
            *(["### Goals missed: what sets the ratio, and the next step", "", notes, ""]
              if notes else []),
        ]
    )  # fmt: skip


def instructions_table(data: dict[str, Any]) -> str:
    """CPU instructions and system calls per request, counted in process."""
    counted, calls = data.get("instructions") or {}, data.get("syscalls") or {}
    if not counted:
        return data.get("error", "")
    rows = [
        [
            f"`{variant}`",
            *(f"{per[e]:,}" for e in ("read", "write")),
            *(_num(calls.get(variant, {}).get(e)) for e in ("read", "write")),
        ]
        for variant, per in counted.items()
    ]
    return "\n".join(
        [
            f"CPU instructions and system calls per request, counted, not timed "
            f"(`python -m bench instructions`: each variant's app through Flask's test client "
            f"against its own redis-server, {data.get('requests', 0)} requests after a warm-up; "
            "instructions by callgrind, the client's side of each Redis round trip included "
            "and Redis's own work not; system calls by strace -c, the difference of two "
            "request counts):",
            "",
            _table(
                ["variant", "instructions/read", "instructions/write",
                 "syscalls/read", "syscalls/write"],
                rows,
            ),  # fmt: skip
        ]
    )


def missed_notes(
    sessions: dict[str, Any], instructions: dict[str, Any] | None, missed: set[str]
) -> str:
    """For each goal the figures miss: what sets the ratio and what would move it."""
    notes = []
    inproc = sessions.get("inprocess_us", {})
    ours, peer = inproc.get("sessionstore", {}), inproc.get("flask_session_norefresh", {})
    counted = (instructions or {}).get("instructions") or {}
    if any(t.startswith("read >=") or t.startswith("in-process CPU per read") for t in missed):
        if "read" in ours and "read" in peer:
            app = f"{ours['read']:,.0f} vs {peer['read']:,.0f} us of app CPU"
            red = f"Redis {ours.get('read_redis', 0):,.0f} vs {peer.get('read_redis', 0):,.0f} us"
        else:
            app, red = "app CPU", "Redis CPU"
        bare = counted.get("bare", {}).get("read")
        mine = counted.get("sessionstore", {}).get("read")
        theirs = counted.get("flask_session_norefresh", {}).get("read")
        count = (
            f" Counted instead of timed, a read is {mine:,} instructions against {theirs:,} "
            f"(a bare request: {bare:,}), so each library adds about "
            f"{mine - bare:,} and {theirs - bare:,} instructions to the request."
            if bare and mine and theirs
            else ""
        )
        notes.append(
            "- **read**: a read is one round trip with one reply in both libraries "
            "(sessionstore: `HGETALL` + `PTTL` pipelined, no script; Flask-Session: `GET`); "
            f"in process, per read: {app}, {red}."
            f"{count} Both are then a small part of a request that gunicorn, Werkzeug and "
            "Flask dominate (the profile below), so a 1.1x lead in req/s would need "
            "sessionstore's part to be a fraction of Flask-Session's, not level with it. "
            "What is left on our side is redis-py's cost per reply (one `read_response` per "
            "command: the pipelined `PTTL` costs the client about 5 us) and decoding the hash "
            "field by field. Next step, if it is "
            "worth a second data-model change: keep the session's deadline in the hash, so a "
            "read is `HGETALL` alone and the client decides when the push-back is due (a "
            "script, checking again with Redis's clock), which saves the `PTTL` and its reply; "
            "beyond that, the gap is HTTP, not the session."
        )
    if any(t.startswith("write >=") for t in missed):
        endpoints = sessions.get("summary", {}).get("endpoints", {}).get("write", {})

        def runs(variant: str) -> str:
            return ", ".join(f"{v:,.0f}" for v in endpoints.get(variant, {}).get("runs", []))

        mine = counted.get("sessionstore", {}).get("write")
        count = (
            f"Counted, a write is {mine:,} instructions against "
            f"{counted['flask_session']['write']:,} (`flask_session`) and "
            f"{counted['flask_session_norefresh']['write']:,} (`flask_session_norefresh`); "
            if mine and "flask_session" in counted and "flask_session_norefresh" in counted
            else ""
        )
        theirs = inproc.get("flask_session_norefresh", {})
        notes.append(
            f"- **write**: {count}in process, {ours.get('write', 0):,.0f} us of app CPU "
            f"against {theirs.get('write', 0):,.0f} (Redis {ours.get('write_redis', 0):,.0f} "
            f"vs {theirs.get('write_redis', 0):,.0f} us). Those are the figures the "
            "neighbours on this shared machine move least; the req/s ratio is taken run by "
            f"run, and the runs themselves spread widely (sessionstore {runs('sessionstore')}; "
            f"`flask_session_norefresh` {runs('flask_session_norefresh')}; `bare` {runs('bare')} "
            "req/s). A write is two round trips in both libraries; ours is the pipelined "
            "read, then `save.lua`, whose commands inside Redis (`PTTL`, `TIME`, `HSET`, "
            "`HMGET`) make Redis's share per write larger than Flask-Session's `GET` and `SET`. "
            "Next step: fewer commands inside `save.lua` (the metadata it reads back with "
            "`HMGET` could come with the load's reply and be checked in one comparison)."
        )
    if any(t.startswith("bytes per logged-in session") for t in missed):
        size = sessions.get("sizes", {}).get("sessionstore", {})
        theirs = sessions.get("sizes", {}).get("flask_session", {}).get("redis_bytes")
        total, index = size.get("redis_bytes"), size.get("index_bytes")
        split = (
            f"{total - index} bytes of session hash and {index} of per-user index, against "
            f"{theirs} for Flask-Session's one string: the hash alone is "
            f"{(total - index) / theirs:.2f}x of it"
            if total and index is not None and theirs
            else "the session hash and the per-user index"
        )
        notes.append(
            f"- **bytes per session**: {split}. The ratio is set by the user index being a "
            "key of its own for every "
            "logged-in user: a Redis key costs about 60 bytes before it holds anything "
            "(object header, dictionary entry, key name, allocator rounding; a 1-byte string "
            "under a 2-byte name is 64 bytes by MEMORY USAGE), and a one-member sorted set "
            "is 104. A second session of the same user adds 48 bytes, not 104: the figure "
            "here, one session per user, is the worst case. Within the hash, the metadata "
            "(`!c` created, `!a` last seen, `!u` the user id) is about 36 bytes of its "
            "listpack. Next "
            "step: keep the user index in shared hashes (a bucket of users per key, small "
            "enough to stay a listpack), so a user's entry costs tens of bytes instead of a "
            "key, and read the user id from the session's own user field instead of the `!u` "
            "copy; that is a data-model change for every script and for revocation, to be "
            "made with sessions of the current format still loading and revocable."
        )
    return "\n\n".join(notes)


def sessions_section(data: dict[str, Any]) -> str:
    s, cfg = data["summary"], data["config"]
    out = [
        "## Session variants, side by side",
        "",
        f"{_measured(data)}. Each variant: its own gunicorn "
        f"(`{data['gunicorn']}`), each behind its own nginx (the cluster's config, "
        "rendered from shop/cluster/nginx.conf.j2 for one upstream, no access log), "
        "one redis-server (AOF everysec). "
        f"wrk: {cfg['connections']} connections, 2 threads, {cfg['duration']:g} s per run, "
        f"{cfg['reps']} repetitions, variants interleaved (order rotated per repetition). "
        "Figures are medians over repetitions; ratios are taken within a repetition "
        "(side by side) and then the median. *app CPU us/req*: CPU of the variant's "
        "gunicorn workers divided by requests served, under load. *in-process CPU us/req*: "
        "the same app driven by Flask's test client in one thread, no server, median of 5 "
        "batches of 1,000 (variants interleaved batch by batch); its ratio (bare's CPU / the "
        "variant's) is what req/s would be relative to `bare` if the app were all there is, "
        "and it is the figure least moved by the neighbours on this shared machine. After "
        "the slash: redis-server's CPU per request during the same batches (INFO cpu).",
        "",
    ]
    inproc = data.get("inprocess_us", {})
    for endpoint, rows in s["endpoints"].items():
        out += [f"### `{'GET /read' if endpoint == 'read' else 'POST /write'}`", ""]
        bare_us = inproc.get("bare", {}).get(endpoint)
        table_rows = []
        for variant, r in rows.items():
            trips = data["round_trips"].get(variant, {}).get(endpoint, {})
            cpu = r["cpu"]
            table_rows.append(
                [
                    f"`{variant}`",
                    f"{r['rps']:,.0f}",
                    _x(r["vs_bare"]),
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    f"{r.get('app_us_per_request', 0):,.0f}",
                    _inproc(
                        inproc.get(variant, {}).get(endpoint),
                        bare_us,
                        inproc.get(variant, {}).get(f"{endpoint}_redis"),
                    ),
                    f"{trips.get('trips', 0):g}",
                    f"{trips.get('commands', 0):g}",
                    f"{r['commands_per_request']:g}",
                    f"{cpu.get('app', 0):.2f} / {cpu.get('nginx', 0):.2f} / "
                    f"{cpu.get('redis', 0):.2f} / {r['wrk_cpu']:.2f} / {cpu.get('machine', 0):.2f}",
                    r["errors"],
                    " ".join(f"{v:,.0f}" for v in r["runs"]),
                ]
            )
        out += [
            _table(
                [
                    "variant",
                    "req/s",
                    "vs bare",
                    "p50 ms",
                    "p99 ms",
                    "app CPU us/req",
                    "in-process CPU us/req (bare / variant) / Redis CPU us/req",
                    "Redis trips/req",
                    "Redis cmds/req",
                    "cmds/req under load",
                    "CPU cores: app / nginx / redis / wrk / whole machine",
                    "errors",
                    "each run (req/s)",
                ],
                table_rows,
            ),  # fmt: skip
            "",
        ]
    vs = s["ours_vs_flask_session"]
    out += [
        "### sessionstore against Flask-Session (req/s ratio, side by side)",
        "",
        _table(
            ["endpoint", "vs `flask_session` (defaults)", "vs `flask_session_norefresh`"],
            [
                [e, _x(v.get("flask_session")), _x(v.get("flask_session_norefresh"))]
                for e, v in vs.items()
            ],
        ),
        "",
        "### What each request sends to Redis (MONITOR pass, per request)",
        "",
        _table(
            ["variant", "endpoint", "sent by the client", "run inside a script"],
            [
                [
                    f"`{variant}`",
                    endpoint,
                    ", ".join(f"{k} x{v:g}" for k, v in t["sent"].items()) or "-",
                    ", ".join(f"{k} x{v:g}" for k, v in t["in_scripts"].items()) or "-",
                ]
                for variant, per in data["round_trips"].items()
                for endpoint, t in per.items()
            ],
        ),
        "",
        "### Bytes per logged-in session (5-line cart, same content everywhere)",
        "",
        _table(
            ["variant", "Redis bytes/session (MEMORY USAGE)", "of which the per-user index",
             "Redis keys/session", "cookie bytes"],
            [
                [f"`{v}`", z["redis_bytes"], z.get("index_bytes", "-") if z["redis_bytes"] else "-",
                 z["keys_per_session"], f"{z['cookie_bytes']:g}"]
                for v, z in data["sizes"].items()
            ],
        ),  # fmt: skip
        "",
        "### Load generator headroom",
        "",
        f"wrk with the same script and connections against an nginx `return 200`: "
        f"**{s['static']['rps']:,.0f} req/s** using {s['static']['wrk_cpu']:.2f} cores, "
        "many times what any variant reaches, while during the variant runs wrk used "
        "the CPU shown in the last CPU column. The generator is not the bottleneck.",
        "",
        "### Where a read request's Python CPU goes (py-spy --gil, one extra run each)",
        "",
        profile_table(data.get("profiles", {})),
        "",
        cost_note(s["endpoints"].get("read", {})),
        "",
    ]
    return "\n".join(out)


def cost_note(read: dict[str, Any]) -> str:
    """The extra app CPU per read over `bare`: what a session costs, in microseconds."""
    if "bare" not in read:
        return ""
    base = read["bare"].get("app_us_per_request", 0)
    parts = [
        f"`{v}` +{r['app_us_per_request'] - base:,.0f} us"
        for v, r in read.items()
        if v != "bare" and "app_us_per_request" in r
    ]
    return (
        f"App CPU per read request beyond `bare` ({base:,.0f} us): " + ", ".join(parts) + ". "
        "On this CPU-bound 2-core machine req/s follows CPU per request, and a session that "
        "needs one Redis round trip pays for that round trip on top of a bare request: the "
        "client's side of it (the profile), the kernel's on both ends and Redis's own work."
    )


def profile_table(profiles: dict[str, Any]) -> str:
    """Share of sampled CPU by library, one column per profiled run."""
    names = [n for n, p in profiles.items() if "by_library" in p]
    if not names:
        return "No profile (py-spy missing or not permitted)."
    libraries = sorted({lib for n in names for lib in profiles[n]["by_library"]})
    rows = [
        [lib, *(f"{profiles[n]['by_library'].get(lib, 0):.0%}" for n in names)] for lib in libraries
    ]
    rows.append(["samples", *(profiles[n]["samples"] for n in names)])
    return _table(["library", *(f"`{n}`" for n in names)], rows)


def scale_section(data: dict[str, Any]) -> str:
    rows = [
        [
            f"{c['sessions']:,}",
            c["dbsize"],
            c["used_memory_mb"],
            c["bytes_per_session"],
            c["p50_us"],
            c["p99_us"],
            c["server_us_per_call"],
        ]
        for c in data["checkpoints"]
    ]
    anatomy = dict(data.get("anatomy", {}))
    limit = anatomy.pop("zset_max_listpack_value", 64)  # Redis 7.0's default
    index = anatomy.get("user_index", {})
    note = ""
    if index.get("encoding") == "skiplist":
        note = (
            f"The user index is a skiplist: its member (the session key, "
            f"{anatomy['hash']['key_length']} characters) is over Redis's "
            f"`zset-max-listpack-value` ({limit}); keep the key prefix short."
        )
    elif index:
        note = (
            f"Both keys stay in Redis's compact listpack encoding: the session key is "
            f"{anatomy['hash']['key_length']} characters (base64url HMAC), under "
            f"`zset-max-listpack-value` ({limit})."
        )
    return "\n".join(
        [
            "## Redis at scale",
            "",
            f"{_measured(data)} on redis-server {data['redis_version']} (no AOF). "
            "Synthetic logged-in sessions written with sessionstore's own key builder and "
            "serializer (hash + per-user index, TTLs), pipelined; read back through "
            "`SessionStore.load` at random.",
            "",
            _table(
                [
                    "sessions",
                    "keys",
                    "used_memory MB",
                    "bytes/session",
                    "load p50 us",
                    "load p99 us",
                    "load inside Redis us",
                ],
                rows,
            ),  # fmt: skip
            "",
            "Where one session's bytes go (MEMORY USAGE):",
            "",
            _table(
                ["key", "key length", "bytes", "encoding"],
                [[role, a["key_length"], a["bytes"], a["encoding"]] for role, a in anatomy.items()],
            ),
            "",
            note,
            "",
        ]
    )


def shop_section(data: dict[str, Any]) -> str:
    from .shop import SHOP_HEADER, TRIP_REQUESTS, analysis, shop_rows

    base = data.get("baseline") or {}
    trips = data.get("round_trips") or {}
    parts = [
        "## The shop: mixed workload through 1, 2 and 3 replicas",
        "",
        f"{_measured(data)} with the real launcher (`shop-cluster up "
        "--replicas N`). " + data["workload"],
        "",
        _table(SHOP_HEADER, shop_rows(data)),
        "",
    ]
    if base:
        rows = []
        for replicas, ratio in base.get("vs_baseline", {}).items():
            ours, theirs = data["summary"].get(replicas, {}), base["summary"].get(replicas, {})
            rows.append(
                [
                    replicas,
                    f"{ours.get('rps', 0):,.0f}",
                    f"{theirs.get('rps', 0):,.0f}",
                    f"{ratio:.2f}x",
                    " ".join(theirs.get("runs", [])),
                ]
            )
        parts += [
            f"### Against commit `{base['commit']}` (before issue 16), same machine, same run",
            "",
            f"The shop of `{base['commit']}` was checked out in a git worktree and started by "
            "its own launcher, each of its runs right after this tree's run of the same "
            "replica count; ratio: the median over repetitions of the two runs' req/s.",
            "",
            _table(
                [
                    "replicas",
                    "req/s now",
                    f"req/s `{base['commit']}`",
                    "now / before",
                    f"each run `{base['commit']}`",
                ],
                rows,
            ),  # fmt: skip
            "",
        ]
    if trips:
        versions = list(trips)
        endpoints = list(trips[versions[0]])
        labels = {"current": "now", "baseline": f"`{base.get('commit', 'baseline')}`"}
        parts += [
            "### Redis round trips per request, by endpoint of the mix",
            "",
            f"{TRIP_REQUESTS} sequential requests per endpoint by one logged-in shopper; "
            "Redis's count of read events (INFO stats `total_reads_processed`: one per "
            "request a client sends, a pipeline counted once) over those requests, minus "
            "the heartbeats' rate measured idle just before.",
            "",
            _table(
                ["endpoint", *(labels.get(v, v) for v in versions)],
                [[e, *(f"{trips[v].get(e, 0):.1f}" for v in versions)] for e in endpoints],
            ),
            "",
        ]
    parts += [
        "Where one replica's Python CPU goes (py-spy --gil on the first replica, "
        "during the first repetition):",
        "",
        profile_table({f"{n} replica(s)": p for n, p in data.get("profiles", {}).items()}),
        "",
        analysis(data),
        "",
    ]
    return "\n".join(parts)


def render(results_dir: Path = RESULTS_DIR) -> str:
    """RESULTS.md from whatever sections have results."""
    meta = None
    parts = [
        targets_section(
            load("sessions", results_dir),
            load("shop", results_dir),
            load("instructions", results_dir),
        )
    ]
    for name, section in (
        ("sessions", sessions_section),
        ("shop", shop_section),
        ("scale", scale_section),
    ):
        data = load(name, results_dir)
        if data is None:
            parts.append(f"## {name}\n\nNot measured yet: run `python -m bench {name}`.\n")
            continue
        meta = meta or {**data["meta"], "command": data.get("command")}
        parts.append(section(data))
    head = [
        "# Benchmark results",
        "",
        "Generated by `python -m bench` from bench/results/*.json; do not edit by hand.",
        "",
    ]
    if meta:
        pk = ", ".join(f"{k} {v}" for k, v in meta["packages"].items())
        head += [
            f"- command: `{meta.get('command', '.venv/bin/python -m bench run')}`",
            f"- machine: {meta['cpu']}, {meta['cores']} cores, Linux {meta['kernel']}, "
            f"load average {meta['loadavg_at_start']:.2f} at start (shared with other jobs)",
            f"- Python {meta['python']}; {pk}",
            f"- {meta['redis_server']}; {meta['nginx']}; {meta['wrk']}",
            "- chart: [docs/bench-throughput.png](../docs/bench-throughput.png)",
            "",
            "Run it: `.venv/bin/python -m bench run` (about 10 minutes here: sessions, the shop "
            "beside the baseline commit's, instructions counted under callgrind, a million "
            "sessions), `--quick` for short runs without callgrind or the million; "
            "`python -m bench --help` for one section at a time.",
            "",
            "How each figure is measured: req/s and latency from wrk (`--latency`, its "
            "Lua `done()` hook prints them as JSON); Redis round trips from Redis's count of "
            "read events (INFO stats `total_reads_processed`: one per request a client sends, "
            "a pipeline counted once) over 50 sequential requests per endpoint, and the "
            "commands of those requests by watching MONITOR during another 50 (a command "
            "tagged `lua` ran inside a script, per-connection set-up such as HELLO is left "
            "out); commands per request under load from INFO "
            "commandstats deltas over wrk's request count; bytes per session from MEMORY USAGE "
            "summed over every key in the variant's own database (so sessionstore's per-user "
            "index counts) divided by the sessions created; CPU from /proc/<pid>/stat of each "
            "process group and /proc/stat for the whole machine; wrk's headroom from the same "
            "script against an nginx `return 200`.",
            "",
        ]
    return "\n".join(head + parts)


def chart(data: dict[str, Any], path: Path = CHART) -> Path:
    """Grouped bars: median req/s per variant for read and write, with each run as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    endpoints = data["summary"]["endpoints"]
    variants = list(endpoints["read"])
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    width = 0.38
    for i, endpoint in enumerate(endpoints):
        xs = [v + (i - 0.5) * width for v in range(len(variants))]
        medians = [endpoints[endpoint][v]["rps"] for v in variants]
        bars = ax.bar(xs, medians, width, label=f"{endpoint} (median)")
        for x, v in zip(xs, variants, strict=True):
            runs = endpoints[endpoint][v]["runs"]
            ax.scatter([x] * len(runs), runs, s=8, color="black", zorder=3)
        for bar, v in zip(bars, variants, strict=True):
            ratio = endpoints[endpoint][v]["vs_bare"]
            ax.annotate(
                f"{ratio:.2f}x",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_xticks(range(len(variants)), variants, rotation=12, fontsize=8)
    ax.set_ylabel("requests/s (higher is better)")
    ax.set_title(
        f"Session variants behind nginx + gunicorn, {data['meta']['date']}\n"
        "bars: median of interleaved runs; dots: each run; labels: ratio vs bare",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
