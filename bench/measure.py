"""Measuring without trusting one number: wrk runs, CPU per process, Redis counters.

Everything reads what the kernel and Redis already count (/proc/<pid>/stat,
INFO commandstats, MONITOR), so the measurement adds nothing to the hot path
of the thing measured, except MONITOR, which is used only in a separate,
sequential calibration pass and never while throughput is measured.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from shop.cluster import procs

LUA_DIR = Path(__file__).resolve().parent / "lua"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- CPU per process ----------------------------------------------------------


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by `pids` (gone ones count as 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, all processes)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass
class CpuWatch:
    """CPU used by named groups of processes between `start()` and `stop()`,
    as a share of one core (1.0 = one core busy all the time). The key
    ``machine`` is every process on the machine, ours and our neighbours':
    what is left after ours is what other jobs took during the run."""

    groups: dict[str, Callable[[], set[int]]]
    _pids: dict[str, set[int]] = field(default_factory=dict)
    _before: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0

    def start(self) -> None:
        # Resolve pids once at the start: workers live for the whole run.
        self._pids = {name: find() for name, find in self.groups.items()}
        self._before = {name: cpu_seconds(pids) for name, pids in self._pids.items()}
        self._before["machine"] = machine_busy_seconds()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        used = {
            name: round((cpu_seconds(pids) - self._before[name]) / wall, 3)
            for name, pids in self._pids.items()
        }
        used["machine"] = round((machine_busy_seconds() - self._before["machine"]) / wall, 3)
        return used


def tree_pids(pid: int) -> set[int]:
    """`pid` and its children (an nginx master and its workers)."""
    return {pid, *procs.child_pids(pid)}


def group_of(pid: int) -> set[int]:
    """Every process in `pid`'s process group (a gunicorn master and its workers)."""
    return procs.group_pids(pid) or {pid}


# -- wrk -------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency, errors, and the CPU wrk itself used."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    wrk_cpu: float  # share of one core used by wrk during the run (it has 2 threads)
    cpu: dict[str, float]  # share of one core per process group, from a CpuWatch

    def as_dict(self) -> dict:
        return self.__dict__.copy()


_JSON_LINE = re.compile(r"^BENCH-JSON (.*)$", re.MULTILINE)


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise procs.MissingBinary("wrk is not installed. Install it with: sudo apt-get install wrk")
    return path


def wrk_argv(
    url: str,
    script: str,
    script_args: Sequence[str] = (),
    *,
    duration: float,
    connections: int,
    threads: int = 2,
    timeout: float = 5.0,
    headers: Sequence[str] = (),
) -> list[str]:
    """The wrk command line: `script` (in bench/lua) against `url` for at most
    `duration` seconds; a request unanswered after `timeout` seconds is an error.
    SIGINT stops it early, with the same summary."""
    return [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout", f"{timeout:g}s",
        "--latency",
        *(option for header in headers for option in ("-H", header)),
        "-s", str(LUA_DIR / script),
        url,
        "--",
        *script_args,
    ]  # fmt: skip


def wrk_summary(out: str, err: str, returncode: int) -> dict[str, int]:
    """The line common.lua's done() prints, as numbers (requests, duration_us,
    p50_us..max_us, each kind of error), plus `errors`: all of them summed."""
    match = _JSON_LINE.search(out)
    if returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({returncode}): {err.strip() or out[-2000:]}")
    raw = json.loads(match.group(1))
    raw["errors"] = sum(raw[k] for k in list(raw) if k.endswith("_errors") or k == "timeouts")
    return raw


def run_wrk(
    url: str,
    script: str,
    script_args: Sequence[str],
    *,
    duration: float,
    connections: int,
    threads: int = 2,
    watch: CpuWatch | None = None,
) -> WrkResult:
    """Run wrk for `duration` seconds against `url` with `script` (in bench/lua)."""
    argv = wrk_argv(
        url, script, script_args, duration=duration, connections=connections, threads=threads
    )
    if watch:
        watch.start()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wrk_before, t0 = cpu_seconds([proc.pid]), time.monotonic()
    wrk_used = wrk_before
    # Sample wrk's own CPU just before it exits (after that /proc forgets it).
    while proc.poll() is None:
        wrk_used = cpu_seconds([proc.pid]) or wrk_used
        time.sleep(0.05)
    wall = time.monotonic() - t0
    cpu = watch.stop() if watch else {}
    try:
        out, err = proc.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        procs.stop_process(proc.pid, group=False)
        raise
    raw = wrk_summary(out, err, proc.returncode)
    seconds = raw["duration_us"] / 1e6
    return WrkResult(
        requests=raw["requests"],
        seconds=round(seconds, 3),
        rps=round(raw["requests"] / seconds, 1),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=raw["errors"],
        wrk_cpu=round((wrk_used - wrk_before) / max(wall, 1e-9), 3),
        cpu=cpu,
    )


# -- Redis counters ---------------------------------------------------------------


def read_events(client: redis.Redis) -> int:
    """Redis's count of read events so far (INFO stats ``total_reads_processed``).

    Redis reads a client's socket once per request it sends, and a pipeline
    arrives in one read, so the growth of this count is the number of round
    trips all clients made, pipelines counted once (MONITOR cannot tell a
    pipeline from separate calls). It is global: see `RoundTripsByCount`."""
    return int(client.info("stats")["total_reads_processed"])


@dataclass
class RoundTripsByCount:
    """Round trips per request from Redis's read-event count, minus the
    background traffic (the shop's heartbeats, about one read per worker per
    second) at the rate measured while nothing else was sent."""

    client: redis.Redis
    background_per_second: float = 0.0

    def calibrate(self, seconds: float = 3.0) -> None:
        before, t0 = read_events(self.client), time.monotonic()
        time.sleep(seconds)  # nothing to wait for: this measures the idle traffic
        idle = read_events(self.client) - before - 1  # our own INFO is one read
        self.background_per_second = max(idle, 0) / (time.monotonic() - t0)

    def per_request(self, send: Callable[[], None], requests: int) -> float:
        """Round trips per request while `send()` makes `requests` requests."""
        before, t0 = read_events(self.client), time.monotonic()
        send()
        reads = read_events(self.client) - before - 1
        background = self.background_per_second * (time.monotonic() - t0)
        return round(max(reads - background, 0) / requests, 2)


def command_calls(client: redis.Redis) -> Counter:
    """Calls per command since the last CONFIG RESETSTAT, from INFO commandstats.

    Commands that a Lua script runs count here too, so this is *commands*
    executed, not round trips (see `RoundTripCounter` for those)."""
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


class RoundTripCounter:
    """Counts what clients send to Redis, with MONITOR, while a block runs.

    MONITOR prints every command as it executes. A command a client sent is
    tagged with the client's address; a command run *inside* a Lua script is
    tagged ``lua``. So: round trips = client-sent commands, except that a
    MULTI ... EXEC block (how redis-py sends a transaction) is one round trip.
    A non-transactional pipeline is over-counted (one trip per command), so
    the benchmark takes its round trips from `RoundTripsByCount` and only the
    commands from here. Commands that set a
    connection up (HELLO, AUTH, SELECT, CLIENT, health-check PING) are counted
    apart: they happen once per pooled connection, not per request. MONITOR
    slows Redis down, so this runs only in a short sequential pass, never
    under load.
    """

    SETUP_COMMANDS = frozenset({"HELLO", "AUTH", "SELECT", "CLIENT", "PING", "READONLY"})

    def __init__(self, port: int, host: str = procs.LOOPBACK) -> None:
        self.host, self.port = host, port
        self.lines: list[str] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self) -> Iterator[RoundTripCounter]:
        self._sock = socket.create_connection((self.host, self.port), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        reader = self._sock.makefile("rb")
        if not reader.readline().startswith(b"+OK"):
            raise RuntimeError("MONITOR refused")
        self._sock.settimeout(0.5)
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                try:
                    line = reader.readline()
                except (TimeoutError, OSError):
                    continue
                if not line:
                    return
                self.lines.append(line.decode(errors="replace").strip())

        self._thread = threading.Thread(target=pump, daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            # A marker command, so we know every earlier line has arrived.
            marker = f"bench-monitor-end-{time.monotonic_ns()}"
            with redis.Redis(host=self.host, port=self.port, socket_timeout=5) as r:
                r.echo(marker)
            procs.wait_until(
                lambda: any(marker in line for line in self.lines[-5:]),
                timeout=10,
                what="the MONITOR stream to catch up",
            )
            stop.set()
            self._sock.close()
            self._thread.join(timeout=2)
            self.lines = [line for line in self.lines if marker not in line]

    def summary(self) -> dict[str, Counter]:
        """{'sent', 'in_scripts', 'setup': Counter(command), 'trips': n}."""
        sent: Counter = Counter()
        setup: Counter = Counter()
        scripted: Counter = Counter()
        trips, in_multi = 0, False
        for line in self.lines:
            # 1712345678.123456 [3 127.0.0.1:53210] "EVALSHA" "abc..." ...
            m = re.match(r'^\+?[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
            if not m:
                continue
            source, command = m.group(1), m.group(2).upper()
            if source == "lua":
                scripted[command] += 1
                continue
            if command in self.SETUP_COMMANDS:
                setup[command] += 1
                continue
            sent[command] += 1
            if command == "MULTI":
                in_multi = True
                trips += 1
            elif command == "EXEC":
                in_multi = False
            elif not in_multi:
                trips += 1
        return {"sent": sent, "in_scripts": scripted, "setup": setup, "trips": trips}
