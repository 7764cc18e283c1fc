"""Small, dependable process helpers shared by the launcher, the test fixtures and
the benchmarks.

Everything here works on pids we started ourselves: nothing looks processes up
by name, so a developer's own redis-server or nginx is never touched. The two
error types are what the launcher's users see, as one line each. It is longer
than the launcher's other modules on purpose: it is the one toolbox the
launcher, the test fixtures and the benchmarks share, so none grows its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import requests

LOOPBACK = "127.0.0.1"
# Files a cluster makes are its user's alone: configs hold the Redis
# password, the data holds every session and password hash.
PRIVATE_UMASK = 0o077
# How long a process of the cluster may take to answer after it was started: a
# replica's first start imports Flask and the app and seeds the catalog, which
# takes seconds on a busy 2-core machine; a minute means it is not coming.
READY_TIMEOUT = 60.0

# What to install when a binary is missing, in the words of Debian/Ubuntu.
INSTALL_HINTS = {
    "redis-server": "sudo apt-get install redis-server",
    "redis-sentinel": "sudo apt-get install redis-sentinel",
    "nginx": "sudo apt-get install nginx",
    "gunicorn": "pip install -e .  (inside the project's virtualenv)",
    "ip": "sudo apt-get install iproute2",
    "keepalived": "sudo apt-get install keepalived",
    "nft": "sudo apt-get install nftables",
}


class MissingBinary(RuntimeError):
    """A program the cluster needs is not installed; the message says how to get it."""


class ClusterError(RuntimeError):
    """Something the user must hear about in one clear line (no traceback)."""


def find_binary(name: str) -> str:
    """Return the path of `name`, looking in PATH and the sbin folders (nginx lives there)."""
    extra = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/sbin"])
    path = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)
    if path is None:
        hint = INSTALL_HINTS.get(name, f"install {name}")
        raise MissingBinary(f"{name} is not installed. Install it with: {hint}")
    return path


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_is_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True if GET `url` answers 200 within `timeout` seconds."""
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_as_cluster_process() -> threading.Event:
    """Set up this process as one of the cluster's own (the watchdog, the
    autoscaler): log lines with time and source on stdout, which the launcher
    sends to its log file; return the event SIGTERM or SIGINT sets, for its
    loop to stop on (`down` stops it with SIGTERM)."""
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = ""
) -> None:
    """Poll `condition` until it is true; raise TimeoutError naming `what` at the deadline.

    A condition that raises is "not yet" (a server still starting refuses
    connections), but the last error is named at the deadline: a condition
    that can never hold (a bug) then says why instead of only how long."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            if condition():
                return
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            why = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for {what or condition}{why}"
            )
        time.sleep(interval)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT) -> None:
    """`wait_until` for the launcher: the deadline is a ClusterError naming `what`,
    and a ClusterError raised by the condition (say, "exited at start") stops the
    wait at once instead of being taken for "not yet"."""
    error: list[ClusterError] = []

    def check() -> bool:
        try:
            return condition()
        except ClusterError as exc:
            error.append(exc)
            return True

    try:
        wait_until(check, timeout=timeout, what=what)
    except TimeoutError as exc:
        raise ClusterError(str(exc))
    if error:
        raise error[0]


def pid_alive(pid: int | None) -> bool:
    """True if `pid` names a running (not zombie) process; a stopped (frozen) one counts."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) not in ("Z", "X")


def _state(pid: int) -> str | None:
    """The process state letter of /proc/PID/stat (R, S, T stopped, Z zombie...), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def is_stopped(pid: int | None) -> bool:
    """True if `pid` is stopped by a signal (SIGSTOP: `shop-cluster freeze`)."""
    return bool(pid) and _state(pid) == "T"


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """`argv` run inside network namespace `netns` (None: here). `ip netns exec`
    execs the program, so the pid we get is the program's own."""
    return [find_binary("ip"), "netns", "exec", netns, *argv] if netns else list(argv)


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    netns: str | None = None,
) -> subprocess.Popen:
    """Start `argv` in its own session (so its whole process group can be signalled),
    with stdout and stderr appended to `log_path` (made mode 0600); inside network
    namespace `netns` if one is given (a host of `up --hosts`). Its umask is 077:
    nothing it writes is readable by other users."""
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "ab") as log:
        return subprocess.Popen(
            in_netns(netns, argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
            umask=PRIVATE_UMASK,  # what it writes (data, logs, sockets) is private
        )


def signal_group(pid: int, sig: int) -> bool:
    """Send `sig` to the process group led by `pid` (falling back to the pid alone)."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_process(pid: int | None, *, timeout: float = 10.0, group: bool = True) -> None:
    """SIGTERM `pid` (and its group), wait up to `timeout`, then SIGKILL what is left."""
    if not pid:
        return
    send = signal_group if group else (lambda p, s: os.kill(p, s))
    try:
        send(pid, signal.SIGTERM)
        # A frozen process (SIGSTOP) keeps SIGTERM pending until it runs again.
        send(pid, signal.SIGCONT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            send(pid, signal.SIGKILL)
    if group:
        # Workers of a gunicorn master may outlive it for a moment.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def redis_conf(
    *,
    port: int,
    data_dir: Path,
    extra: dict[str, str] | None = None,
    bind: str = LOOPBACK,
    password: str | None = None,
) -> str:
    """A redis.conf for a non-root redis-server on `bind` (loopback unless it runs
    on a host of its own) whose files stay in `data_dir`. With a `password`,
    every client must AUTH (requirepass) and a replica gives it to its primary
    (masterauth): any local user can reach a loopback port."""
    settings = {
        "bind": bind,
        "port": str(port),
        "daemonize": "no",
        # Protected mode refuses every client but loopback when there is no
        # password. On a host of `up --hosts` the address is on the cluster's
        # private bridge, reachable from this machine only, as loopback is.
        "protected-mode": "yes" if bind == LOOPBACK else "no",
        "dir": str(data_dir),
        "pidfile": str(data_dir / "redis.pid"),
        "logfile": '""',
        # Sessions and carts must survive a restart: an append-only file,
        # fsynced once a second (at most one second of writes at risk).
        "appendonly": "yes",
        "appendfsync": "everysec",
        "save": '""',
    }
    if password:
        settings["requirepass"] = password
        settings["masterauth"] = password
    settings.update(extra or {})
    return "".join(f"{key} {value}\n" for key, value in settings.items())


def start_redis(
    data_dir: Path,
    port: int,
    *,
    extra: dict[str, str] | None = None,
    timeout: float = 15.0,
    address: str = LOOPBACK,
    netns: str | None = None,
    password: str | None = None,
) -> subprocess.Popen:
    """Start redis-server on `address` (loopback by default; inside `netns` if
    given) with its config, data and log in `data_dir`; with `password` required
    of every client (given in the config file, never on the command line, which
    every user can read with `ps`)."""
    binary = find_binary("redis-server")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = data_dir / "redis.conf"
    write_private(
        conf, redis_conf(port=port, data_dir=data_dir, extra=extra, bind=address, password=password)
    )
    log = data_dir / "redis.log"
    proc = spawn([binary, str(conf)], log_path=log, netns=netns)
    try:
        what = f"redis-server on {address}:{port} (log: {log})"
        wait_for(lambda: answers(proc, port, log, address, password), what, timeout)
    except BaseException:
        stop_process(proc.pid, timeout=5)  # never leave a half-started server behind
        raise
    return proc


def answers(
    proc: subprocess.Popen,
    port: int,
    log: Path,
    address: str = LOOPBACK,
    password: str | None = None,
) -> bool:
    """Whether a redis-server (or Sentinel) we just started answers yet; ClusterError
    (which stops a `wait_for` at once) if it has already exited."""
    if proc.poll() is not None:
        raise ClusterError(f"the server for port {port} exited at start; see {log}")
    return redis_ping(port, address, password)


def _resp(*words: str) -> bytes:
    """A command in Redis's protocol (RESP), whatever bytes its words hold."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def redis_ping(port: int, address: str = LOOPBACK, password: str | None = None) -> bool:
    """True if a Redis server (or Sentinel) at `address`:`port` answers PING within
    0.5 s, after AUTH with `password` if one is given."""
    request = (_resp("AUTH", password) if password else b"") + _resp("PING")
    try:
        with socket.create_connection((address, port), timeout=0.5) as sock:
            sock.sendall(request)
            answer = b""
            while b"PONG" not in answer and b"-" not in answer and len(answer) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    break
                answer += chunk
            return b"+PONG" in answer and b"-" not in answer
    except OSError:
        return False


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by this user only (mode 0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode otherwise
    with os.fdopen(fd, "w") as out:
        out.write(text)


def boot_id() -> str:
    """This boot's id: pids recorded under another boot id name nothing of ours."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start_time(pid: int | None) -> int | None:
    """When `pid` started (clock ticks since boot), or None if it does not run.

    Stored next to a pid, it tells our process from a later one that reused
    the pid, so a stale state file never makes us signal a stranger.
    """
    if not pid_alive(pid):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def is_same_process(pid: int | None, start_time: int | None) -> bool:
    """True if `pid` runs and is the very process that started at `start_time`."""
    if not pid or start_time is None:
        return False
    return process_start_time(pid) == start_time


def child_pids(pid: int) -> set[int]:
    """The direct children of `pid` (e.g. an nginx master's workers)."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children.update(int(c) for c in task.read_text().split())
        except (OSError, ValueError):
            continue
    return children


def group_pids(pgid: int) -> set[int]:
    """Every running process whose process group is `pgid` (a replica's master and workers)."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.add(int(stat.parent.name))
    return found


def stop_many(pids: Sequence[int], *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Signal several process groups at once and wait for all of them together
    (stopping replicas one by one would add up their graceful shutdowns)."""
    for pid in pids:
        signal_group(pid, sig)
        signal_group(pid, signal.SIGCONT)  # a frozen group only acts on `sig` once running
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline and (pid_alive(pid) or group_pids(pid)):
            _reap(pid)
            time.sleep(0.05)
    for pid in pids:
        stop_process(pid, timeout=0)
