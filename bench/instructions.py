"""What one request costs each session variant in CPU instructions and system
calls: counted, not timed, so the neighbours on a shared machine cannot move it.

Each (variant, endpoint) runs in its own Python process (`worker`) driving the
variant's app through Flask's test client against a private redis-server:
warm-up requests first, then `REQUESTS` requests, each inside a call of
``functools.reduce``, so that ``valgrind --tool=callgrind
--toggle-collect=functools_reduce`` counts the instructions of exactly those
requests (the client's side of the Redis round trip included, Redis's own
work not). A second run under ``strace -c`` counts the system calls of the
whole process for two request counts; the difference is the calls per request.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shop.cluster import procs

from .apps import REDIS_VARIANTS
from .sessions import ENDPOINTS

VARIANTS = ("bare", *REDIS_VARIANTS)
REQUESTS = 200
WARM_UP = 30
# Two processes at a time: callgrind is single-threaded, and the machine has 2 cores.
PARALLEL = 2
REPO = Path(__file__).resolve().parent.parent


def worker(variant: str, endpoint: str, requests: int, redis_url: str) -> None:
    """Run in the counted process: warm up, then `requests` requests, each inside
    functools.reduce (the marker callgrind collects in)."""
    os.environ["BENCH_REDIS_URL"] = redis_url
    from .apps import create_app

    client = create_app(variant).test_client()
    client.post("/login?n=999999")
    method, path = ENDPOINTS[endpoint]
    for _ in range(WARM_UP):
        client.open(path, method=method)
    for _ in range(requests):
        functools.reduce(lambda _a, _b: client.open(path, method=method), (0, 0))


def _worker_argv(variant: str, endpoint: str, requests: int, redis_url: str) -> list[str]:
    return [sys.executable, "-m", "bench.instructions", variant, endpoint, str(requests), redis_url]


def count_instructions(variant: str, endpoint: str, redis_url: str) -> int:
    """CPU instructions per request (callgrind)."""
    argv = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        "--toggle-collect=functools_reduce",
        *_worker_argv(variant, endpoint, REQUESTS, redis_url),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, cwd=REPO)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"callgrind failed for {variant} {endpoint}: {done.stderr[-1500:]}")
    return round(int(found.group(1)) / REQUESTS)


def count_syscalls(variant: str, endpoint: str, redis_url: str) -> float:
    """System calls per request (strace -c, the difference of two request counts)."""

    def total(requests: int) -> int:
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
            argv = [
                "strace", "-f", "-c", "-o", out.name,
                *_worker_argv(variant, endpoint, requests, redis_url),
            ]  # fmt: skip
            subprocess.run(argv, capture_output=True, timeout=600, cwd=REPO, check=True)
            line = next(line for line in out.read().splitlines() if line.endswith(" total"))
            return int(line.split()[3])

    return round((total(REQUESTS + 100) - total(100)) / REQUESTS, 2)


def run_instructions(workdir: Path, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Instructions and system calls per request of every variant and endpoint."""
    if shutil.which("valgrind") is None:
        return {"error": "valgrind is not installed (apt-get install valgrind)"}
    port = procs.free_port()
    redis_proc = procs.start_redis(workdir / "redis", port)
    try:
        url = f"redis://{procs.LOOPBACK}:{port}"
        jobs = [(v, e) for v in VARIANTS for e in ENDPOINTS]
        with ThreadPoolExecutor(PARALLEL) as pool:
            counts = dict(
                zip(jobs, pool.map(lambda job: count_instructions(*job, url), jobs), strict=True)
            )
        progress(f"instructions per request: {counts}")
        calls = {}
        if shutil.which("strace"):
            calls = {job: count_syscalls(*job, url) for job in jobs}
            progress(f"system calls per request: {calls}")
    finally:
        procs.stop_process(redis_proc.pid)
    return {
        "requests": REQUESTS,
        "instructions": {v: {e: counts[v, e] for e in ENDPOINTS} for v in VARIANTS},
        "syscalls": {v: {e: calls[v, e] for e in ENDPOINTS} for v in VARIANTS} if calls else {},
    }


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
