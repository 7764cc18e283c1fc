"""The watchdog beside nginx: takes a hung or unready replica out of rotation in
a second or two, and puts it back once it answers again.

Why it exists: open-source nginx has no active health checks. It learns that a
replica is sick only from a request that fails, and a hung replica (a frozen
process, a host whose packets vanish) fails nothing quickly: the kernel accepts
the connection, or nothing answers at all, and the request waits out
proxy_read_timeout. nginx then sets the replica aside for fail_timeout (5 s)
and sends it a live request again, which waits again: a hung replica costs a
shopper a stall every few seconds for as long as it hangs. It also never
learns of a replica that answers but cannot serve (a 503 because it cannot
reach Redis), since a 503 is not retried. Kubernetes solves this with
readiness probes; this is the same idea for a plain nginx: probe every
replica's /readyz, and re-render nginx's upstream with the failing ones as
`backup` servers and reload it. A backup gets no request while a replica in
rotation answers, and is tried at once when all of them fail (the last one
crashed between two probes). A reload (SIGHUP) is graceful: new workers start
with the new config, old ones finish what they have, so nothing in flight is
cut. It was chosen over nginx modules with active checks (not in Debian's
nginx, and the same config must serve the official Docker image) and over
nginx Plus's API (not open source).

The rules, applied every round to what the probes said:
- A replica that fails FALL probes in a row is failing; one that passes RISE
  in a row is passing again. FALL and RISE keep one slow answer (a pause, a
  burst of load) from reloading nginx twice.
- Every failing replica is out of rotation while at least one is passing,
  except one still in rotation whose last probe passed: it is on its way back,
  and taking it out now would only reload nginx twice.
- When none passes, the fault is not theirs but the store's (they all answer
  503) or everything's: a replica that answers (503) stays in, since the shop's
  own fast JSON 503 beats nginx's 502 "no live upstreams"; one that answers
  nothing is out. If that would leave none, all stay in: nginx can do no
  better than try, and its timeouts still bound each try.

Input: the balancer's spec (`nginxconf.Balancer`), saved by the launcher beside
the config and re-read whenever it changes (`scale`). So the watchdog can run
wherever the files are; in hosts mode, one per load balancer, in that host's
network namespace. Outputs: the config and the reloads; one log line per
decision (its stdout, the launcher keeps it in WORKDIR/logs/watchdog.log); one
event per replica taken out or put back in the cluster's journal, which the
timeline chart marks; and its status (each replica's last probe, what is out,
the last decisions) in the balancer's `watchdog_file`, which `status` shows.

    python -m shop.cluster.watchdog SPEC [--interval S] [--timeout S] [--fall N] [--rise N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import nginxconf, procs
from .procs import ClusterError
from .state import Proc, State, Workdir
from .timeline import EventLog

NAME = "watchdog"  # beside `nginx`; beside nginx-2 it is watchdog-2 (see `plan`)
READY_PATH = "/readyz"
# Every bound here decides how long a hung replica stays in rotation: at most
# INTERVAL + FALL x TIMEOUT, 1.5 s, plus a reload (tens of ms).
# /readyz takes 10 to 20 ms; with 8 shoppers on this 2-core machine its 99th
# percentile was 0.14 s, and 0.5 s is over three times that. A hung replica
# never answers, so waiting longer would only delay the verdict.
TIMEOUT = 0.5
# Twice a second: a Redis PING per replica each time, which costs nothing.
INTERVAL = 0.5
FALL = 2
RISE = 2
# nginx starts its new workers within milliseconds of SIGHUP; past this it is
# frozen or gone, and the watchdog goes back to probing rather than wait.
RELOAD_TIMEOUT = 2.0
# How long a started watchdog may take to write its first status (imports).
START_TIMEOUT = 30.0
# Decisions kept in the status file for `shop-cluster status`.
DECISIONS_KEPT = 20

log = logging.getLogger("watchdog")


@dataclass(frozen=True)
class Probe:
    """One GET /readyz: `ok` if 200; `answered` if any HTTP answer came at all."""

    ok: bool
    answered: bool
    seconds: float
    reason: str


def probe(address: str, timeout: float) -> Probe:
    """Ask the replica at `address` (host:port) whether it is ready, within `timeout`
    (connect, send and answer: a frozen replica accepts the connection, then says nothing).
    A plain connection each time, no proxy, no pool: what a new client would meet."""
    host, _, port = address.rpartition(":")
    started = time.monotonic()
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("GET", READY_PATH, headers={"User-Agent": "shop-cluster-watchdog"})
        status = connection.getresponse().status
    except TimeoutError:
        return Probe(False, False, time.monotonic() - started, f"no answer within {timeout:g} s")
    except ConnectionRefusedError:
        return Probe(False, False, time.monotonic() - started, "connection refused")
    except (OSError, http.client.HTTPException) as exc:
        return Probe(False, False, time.monotonic() - started, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
    seconds = time.monotonic() - started
    if status == 200:
        return Probe(True, True, seconds, "ready")
    return Probe(False, True, seconds, f"HTTP {status} (not ready)")


@dataclass
class Health:
    """What the probes say of one replica, with hysteresis."""

    passing: bool = True
    streak: int = 0  # probes in a row that disagree with `passing`
    last: Probe | None = None

    def record(self, result: Probe, *, fall: int, rise: int) -> bool:
        """Count one probe; True if the replica just turned passing or failing."""
        self.last = result
        if result.ok == self.passing:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak < (fall if self.passing else rise):
            return False
        self.passing, self.streak = result.ok, 0
        return True


def verdict(health: Mapping[str, Health], out_now: Collection[str] = ()) -> tuple[set[str], str]:
    """Which replicas to take out of rotation (`out_now`: those out now), and why some
    failing ones stay in (empty when none does); the rules are the module's docstring."""
    failing = {name for name, h in health.items() if not h.passing}
    if not failing or len(failing) < len(health):
        coming_back = {n for n in failing - set(out_now) if health[n].last and health[n].last.ok}
        return failing - coming_back, ""
    silent = {name for name in failing if not (health[name].last and health[name].last.answered)}
    if not silent:
        return set(), "no replica is ready, all answer 503 (the store?): all stay in rotation"
    if silent != failing:
        return silent, "no replica is ready; those that answer 503 (the store?) stay in rotation"
    return set(), "no replica answers: all stay in rotation, nginx's own timeouts still apply"


class Watchdog:
    """Probes the replicas of one balancer and keeps its nginx's rotation in step."""

    def __init__(
        self,
        spec_file: Path,
        *,
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
        fall: int = FALL,
        rise: int = RISE,
    ) -> None:
        self.spec_file = Path(spec_file)
        self.interval, self.timeout, self.fall, self.rise = interval, timeout, fall, rise
        self.balancer = nginxconf.Balancer.load(self.spec_file)
        self.spec_mtime = self.spec_file.stat().st_mtime_ns
        # A replica the balancer has out already (a restarted watchdog) must earn its way back.
        out = set(self.balancer.out)
        self.health = {name: Health(passing=name not in out) for name in self.replicas}
        self.note = ""
        self.reloads = 0
        self.said_no_cut = False
        self.decisions: list[dict[str, Any]] = []
        self.events = EventLog(self.balancer.events) if self.balancer.events else None
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="probe")

    @property
    def replicas(self) -> dict[str, str]:
        return self.balancer.replicas

    def run(self, stop: threading.Event) -> None:
        """Probe every `interval` until `stop` is set."""
        settings = f"every {self.interval:g} s, timeout {self.timeout:g} s, "
        settings += f"out after {self.fall} failures, back after {self.rise} passes"
        self.decide(f"watching {', '.join(self.replicas)} ({settings})")
        while not stop.is_set():
            started = time.monotonic()
            self.round()
            stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        self.decide("stopping")
        self.write_status()

    def round(self) -> None:
        """One round: re-read the spec if it changed, probe all, act on the verdict."""
        self.follow_spec()
        names = list(self.replicas)
        futures = [self.pool.submit(probe, self.replicas[n], self.timeout) for n in names]
        for name, future in zip(names, futures, strict=True):
            self.health[name].record(future.result(), fall=self.fall, rise=self.rise)
        out, note = verdict(self.health, self.balancer.out)
        if note != self.note:
            self.decide(note or "a replica passes its probe again: failing ones go out again")
            self.note = note
        if out != set(self.balancer.out):
            self.apply(out)
        self.write_status()

    def follow_spec(self) -> None:
        """Pick up replicas added or removed by the launcher (`scale`)."""
        try:
            mtime = self.spec_file.stat().st_mtime_ns
            if mtime == self.spec_mtime:
                return
            balancer = nginxconf.Balancer.load(self.spec_file)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read %s (%s); keeping the replicas I know", self.spec_file, exc)
            return
        self.spec_mtime = mtime
        self.adopt(balancer)

    def adopt(self, balancer: nginxconf.Balancer) -> None:
        """Watch `balancer`, the spec as saved now: a health record for each replica
        the launcher added, none for those it removed. Whoever read the spec last
        (this watchdog's `follow_spec`, or its own `take_out`, which may find a
        `scale` saved meanwhile) hands it here, so no replica goes unrecorded."""
        before = set(self.replicas)
        self.balancer = balancer
        for name in set(self.replicas) - before:
            self.health[name] = Health(passing=name not in balancer.out)
        for name in before - set(self.replicas):
            del self.health[name]
        if set(self.replicas) != before:
            self.decide(f"now watching {', '.join(self.replicas)}")

    def apply(self, out: set[str]) -> None:
        """Render nginx's config with `out` down and reload it; say what changed and why."""
        started = time.monotonic()
        out_before = set(self.balancer.out)
        try:
            self.adopt(nginxconf.take_out(self.spec_file, out))
            self.spec_mtime = self.spec_file.stat().st_mtime_ns
            reloaded = self.reload_nginx()
        except (ClusterError, OSError, ValueError) as exc:
            self.decide(f"could not change nginx's rotation ({exc}); trying again next round")
            return
        # Among the replicas there now: a `scale` may have come between.
        went_out = sorted(set(self.balancer.out) - out_before)
        came_in = sorted((out_before - set(self.balancer.out)) & set(self.replicas))
        took = f"nginx reloaded in {(time.monotonic() - started) * 1000:.0f} ms"
        if not reloaded:
            took = "nginx is not running or did not reload: its config is written for its start"
        for name in went_out:
            last = self.health[name].last
            why = last.reason if last else "?"
            self.decide(f"{name} OUT of rotation: {why} ({self.fall} in a row); {took}")
            self.journal("out", name, f"{name} out of rotation", why)
            if last and not last.answered:
                self.release_stuck(name)
        for name in came_in:
            self.decide(f"{name} back IN rotation: ready ({self.rise} in a row); {took}")
            self.journal("in", name, f"{name} back in rotation", "ready")

    def release_stuck(self, name: str) -> None:
        """Abort this host's connections to a replica that stopped answering, so the
        requests nginx has waiting on it fail now and are resent to another replica,
        instead of each waiting out proxy_read_timeout (what HAProxy's
        `on-marked-down shutdown-sessions` does). Needs CAP_NET_ADMIN (root); without
        it they simply wait out the timeout."""
        cut = cut_connections(self.replicas[name])
        if cut is None:
            if not self.said_no_cut:
                self.decide(
                    "not root: requests already waiting on a hung replica wait out "
                    "nginx's read timeout (3 s); as root they are resent at once"
                )
                self.said_no_cut = True  # fmt: skip
            return
        self.decide(f"{name}: aborted {cut} open connections to it (waiting requests resent)")

    def reload_nginx(self) -> bool:
        """SIGHUP to this balancer's nginx; True once it runs workers with the new config."""
        pid = nginxconf.master_pid(self.balancer)
        if pid is None:
            return False
        before = procs.child_pids(pid)
        os.kill(pid, signal.SIGHUP)
        self.reloads += 1
        try:
            procs.wait_until(
                lambda: bool(procs.child_pids(pid) - before),
                timeout=RELOAD_TIMEOUT,
                interval=0.01,
                what="nginx's new workers",
            )
        except TimeoutError:
            return False
        return True

    def decide(self, text: str) -> None:
        log.info(text)
        self.decisions = [*self.decisions, {"at": time.time(), "text": text}][-DECISIONS_KEPT:]

    def journal(self, kind: str, name: str, label: str, detail: str) -> None:
        if self.events is not None:
            try:
                self.events.record(kind, name, label=label, detail=detail)
            except OSError as exc:
                log.warning("cannot write the event journal %s: %s", self.events.path, exc)

    def write_status(self) -> None:
        status = {
            "pid": os.getpid(),
            "updated": time.time(),
            "settings": {"interval": self.interval, "timeout": self.timeout,
                         "fall": self.fall, "rise": self.rise},
            "out": list(self.balancer.out),
            "note": self.note,
            "reloads": self.reloads,
            "replicas": {
                name: {"passing": h.passing, **(asdict(h.last) if h.last else {})}
                for name, h in self.health.items()
            },
            "decisions": self.decisions,
        }  # fmt: skip
        path = self.balancer.watchdog_file
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(status, indent=1))
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)


def cut_connections(address: str) -> int | None:
    """Abort every TCP connection of this network namespace to `address` (host:port)
    with `ss -K` (the kernel's SOCK_DESTROY: the local end fails at once, the peer
    gets a reset); return how many, or None when that is not allowed here."""
    ss = shutil.which("ss") or shutil.which("ss", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if ss is None or os.geteuid() != 0:
        return None
    host, _, port = address.rpartition(":")
    try:
        result = subprocess.run(
            [ss, "-K", "-t", "-n", "-H", "dst", f"{host}:{port}"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return len(result.stdout.splitlines())


def read_status(balancer: nginxconf.Balancer) -> dict[str, Any] | None:
    """What the watchdog of `balancer` last wrote, or None (not started, unreadable)."""
    try:
        return json.loads(balancer.watchdog_file.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------- for the launcher
def plan(state: State) -> list[Proc]:
    """One watchdog per nginx of `state`, on the same host (address, namespace) and
    named after it: `watchdog` beside `nginx`, `watchdog-2` beside `nginx-2`."""
    return [
        Proc(nginx.name.replace("nginx", NAME, 1), 0, address=nginx.address, netns=nginx.netns)
        for nginx in state.balancers()
    ]


def watched(state: State, proc: Proc) -> Proc:
    """The nginx the watchdog `proc` looks after."""
    return state.balancers()[state.watchdogs.index(proc)]


def argv(spec_file: Path, options: Sequence[str] = ()) -> list[str]:
    """The command line of a watchdog over the balancer saved in `spec_file`."""
    return [sys.executable, "-m", "shop.cluster.watchdog", str(spec_file), *options]


def spawn(workdir: Workdir, proc: Proc, balancer: nginxconf.Balancer) -> None:
    """Start the watchdog `proc` over `balancer` (on its nginx's host); return once it
    has written its status."""
    log_path = workdir.log(proc)
    popen = procs.spawn(
        argv(balancer.spec_file),
        log_path=log_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        netns=proc.netns,
    )
    proc.record(popen)

    def started() -> bool:
        if popen.poll() is not None:
            raise ClusterError(f"the watchdog exited at start; see {log_path}:\n"
                               f"{procs.tail(log_path)}")  # fmt: skip
        status = read_status(balancer)
        return bool(status and status.get("pid") == popen.pid)

    procs.wait_for(started, f"the watchdog to start (log: {log_path})", timeout=START_TIMEOUT)


def is_fresh(status: Mapping[str, Any] | None, proc: Proc) -> bool:
    """Whether `status` was written lately by `proc` (a frozen or dead watchdog writes none)."""
    if not status or status.get("pid") != proc.pid:
        return False
    interval = float(status.get("settings", {}).get("interval", INTERVAL))
    # A round takes at most interval + timeout; three rounds missed is not "late".
    return time.time() - float(status.get("updated", 0)) < 3 * (interval + TIMEOUT) + 1


# ---------------------------------------------------------------- the process
def main(args: Sequence[str] | None = None) -> int:
    """`python -m shop.cluster.watchdog SPEC`: run until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m shop.cluster.watchdog",
        description="Probe every replica of one nginx (/readyz) and keep failing ones out of "
        "its rotation: re-render its config with them as backup servers and reload it.",
    )
    parser.add_argument("spec", type=Path, help="the balancer's spec (nginx/balancer.json)")
    parser.add_argument("--interval", type=float, default=INTERVAL, help=f"seconds between "
                        f"probe rounds (default: {INTERVAL:g})")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help=f"seconds a probe may "
                        f"take (default: {TIMEOUT:g})")  # fmt: skip
    parser.add_argument("--fall", type=int, default=FALL, help=f"failed probes in a row to take "
                        f"a replica out (default: {FALL})")  # fmt: skip
    parser.add_argument("--rise", type=int, default=RISE, help=f"passed probes in a row to put "
                        f"it back (default: {RISE})")  # fmt: skip
    options = parser.parse_args(args)
    stop = procs.run_as_cluster_process()
    try:
        watchdog = Watchdog(
            options.spec, interval=options.interval, timeout=options.timeout,
            fall=options.fall, rise=options.rise,
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: cannot read the balancer spec {options.spec}: {exc}", file=sys.stderr)
        return 1
    watchdog.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
