"""Where the CPU goes: py-spy samples a running gunicorn (master and workers)
while wrk loads it, and the samples are summed by library.

py-spy reads the target's memory from outside, so the server runs unmodified.
With --gil only the thread holding the GIL is sampled: Python CPU time, not
threads waiting for Redis or a socket.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

# First match, walking from the innermost frame outwards, names the sample's owner.
CATEGORIES = (
    ("redis-py (client, parsing, socket I/O)", re.compile(r"(^|/)redis/|hiredis")),
    ("sessionstore", re.compile(r"(^|/)sessionstore/")),
    ("Flask-Session / msgspec", re.compile(r"(^|/)flask_session/|msgspec")),
    ("prometheus_client (the shop's metrics)", re.compile(r"(^|/)prometheus_client/")),
    ("shop app code", re.compile(r"(^|/)shop/")),
    ("bench app code", re.compile(r"(^|/)bench/")),
    ("Jinja2", re.compile(r"(^|/)jinja2/")),
    ("Flask", re.compile(r"(^|/)flask/")),
    ("Werkzeug (HTTP parsing, routing)", re.compile(r"(^|/)werkzeug/")),
    ("gunicorn (HTTP server)", re.compile(r"(^|/)gunicorn/")),
    ("itsdangerous (cookie signing)", re.compile(r"(^|/)itsdangerous/")),
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy binary (from the bench extra), or None when it is not installed."""
    venv_bin = Path(__import__("sys").executable).parent / "py-spy"
    return str(venv_bin) if venv_bin.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """Start sampling `pid` and its children for `seconds`; None if py-spy is missing."""
    binary = py_spy()
    if binary is None:
        return None
    argv = [
        binary, "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--gil",
        "--duration", str(max(1, round(seconds))), "--rate", "200",
        "--format", "raw", "--output", str(out),
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish(proc: subprocess.Popen | None, out: Path, timeout: float = 60) -> dict[str, Any]:
    """Wait for py-spy and summarize what it recorded."""
    if proc is None:
        return {"error": "py-spy not installed (pip install -e '.[bench]')"}
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not out.exists():
        return {"error": f"py-spy recorded nothing (exit {proc.returncode})"}
    return summarize(out.read_text())


def summarize(collapsed: str, top: int = 10) -> dict[str, Any]:
    """Shares of samples by library (innermost known frame) and the hottest
    functions (innermost frame), from py-spy's collapsed-stack output."""
    owners: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = _FRAME.match(frames[-1])
        leaves[f"{leaf['func']} ({Path(leaf['file']).name})" if leaf else frames[-1]] += count
        owners[_owner(frames)] += count
    if not total:
        return {"error": "no samples"}
    return {
        "samples": total,
        "by_library": {k: round(v / total, 3) for k, v in owners.most_common()},
        "hottest": {k: round(v / total, 3) for k, v in leaves.most_common(top)},
    }


def _owner(frames: list[str]) -> str:
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        file = match["file"] if match else frame
        for name, pattern in CATEGORIES:
            if pattern.search(file):
                return name
    return "other (stdlib, interpreter)"
