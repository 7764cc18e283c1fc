"""The local cluster as plain processes: redis-server, N gunicorn replicas, nginx.

`Cluster(workdir)` does what the `shop-cluster` subcommands say; the CLI only
parses arguments and prints. Everything the cluster writes (configs, pid and
state files, logs, Redis data, nginx temp files) stays inside the workdir, and
every process is signalled by the pid we recorded, checked against its start
time, so a stale state file never makes us signal a stranger.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from . import ha, nginxconf, procs

STATE_VERSION = 1
DEFAULT_PORT = 8080
DEFAULT_REPLICAS = 3
DEFAULT_WORKDIR = ".cluster"
READY_TIMEOUT = 60.0
# gunicorn's graceful timeout is 30 s; give in-flight requests that long.
GRACEFUL_TIMEOUT = 35.0
# How long old nginx workers may take to finish their requests after a reload.
NGINX_DRAIN_TIMEOUT = 15.0
REPLICA_PREFIX = "shop-"
GUNICORN_CONFIG = "python:shop.gunicorn_conf"
REDIS_MODES = ("single", "ha")
# In HA mode: replica acks every replica asks for before a write counts (the
# shop's and the sessions'); overridable from the environment of `up`.
HA_DEFAULT_ACKS = {"SHOP_REPLICA_ACKS": "1", "SESSION_REPLICA_ACKS": "1"}
WSGI_APP = "shop.wsgi:app"


class ClusterError(RuntimeError):
    """Something the user must hear about in one clear line (no traceback)."""


@dataclass
class Proc:
    """One process of the cluster as recorded in the state file."""

    name: str
    port: int
    pid: int | None = None
    start_time: int | None = None

    def alive(self) -> bool:
        return procs.is_same_process(self.pid, self.start_time)

    def record(self, popen: subprocess.Popen) -> None:
        self.pid = popen.pid
        self.start_time = procs.process_start_time(popen.pid)


@dataclass
class State:
    """What runs where; saved as JSON in WORKDIR/state.json."""

    port: int
    redis: Proc | None  # the single Redis; None in HA mode (see redis_nodes)
    nginx: Proc
    replicas: list[Proc] = field(default_factory=list)
    boot_id: str = ""
    version: int = STATE_VERSION
    # HA mode (`up --redis ha`): Redis nodes redis-1, redis-2 (which one is
    # primary is Sentinel's call, asked when needed) and Sentinels sentinel-1..3.
    redis_nodes: list[Proc] = field(default_factory=list)
    sentinels: list[Proc] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{procs.LOOPBACK}:{self.port}/"

    @property
    def ha(self) -> bool:
        return bool(self.sentinels)

    def stores(self) -> list[Proc]:
        """Every store process: the single Redis, or the HA nodes and Sentinels."""
        return [self.redis] if self.redis else [*self.redis_nodes, *self.sentinels]

    def procs(self) -> list[Proc]:
        return [*self.stores(), *self.replicas, self.nginx]

    def find(self, name: str) -> Proc:
        for proc in self.procs():
            if proc.name == name:
                return proc
        names = ", ".join(p.name for p in self.procs())
        raise ClusterError(f"no process named {name!r} in this cluster (there are: {names})")

    def to_json(self) -> str:
        return json.dumps({"url": self.url, **asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> State:
        data = json.loads(text)
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown state file version {data.get('version')!r}")
        return cls(
            port=int(data["port"]),
            redis=Proc(**data["redis"]) if data.get("redis") else None,
            nginx=Proc(**data["nginx"]),
            replicas=[Proc(**r) for r in data["replicas"]],
            boot_id=data.get("boot_id", ""),
            redis_nodes=[Proc(**r) for r in data.get("redis_nodes", [])],
            sentinels=[Proc(**r) for r in data.get("sentinels", [])],
        )


class Cluster:
    """One cluster, identified by its workdir; several can run side by side."""

    gunicorn_config = GUNICORN_CONFIG
    wsgi_app = WSGI_APP

    def __init__(self, workdir: Path | str = DEFAULT_WORKDIR) -> None:
        self.workdir = Path(workdir).absolute()
        self.state_file = self.workdir / "state.json"
        self.log_dir = self.workdir / "logs"
        self.redis_dir = self.workdir / "redis"
        self.nginx_dir = self.workdir / "nginx"
        self.nginx_conf = self.nginx_dir / "nginx.conf"
        self.secret_file = self.workdir / "secret_key"

    # ----------------------------------------------------------------- state
    def load(self) -> State | None:
        """The recorded state, or None when there is none (or it is unreadable)."""
        try:
            state = State.from_json(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise ClusterError(
                f"cannot read {self.state_file} ({exc}); stop any leftover processes "
                f"yourself and remove that file"
            )
        if state.boot_id != procs.boot_id():
            # Recorded before a reboot: those pids now name strangers, never signal them.
            for proc in state.procs():
                proc.pid = proc.start_time = None
        return state

    def save(self, state: State) -> None:
        # Write then rename: a reader never sees half a file.
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.state_file)

    def is_running(self, state: State | None) -> bool:
        """Whether anything recorded in `state` still runs (on this boot)."""
        if state is None:
            return False
        return any(p.alive() for p in state.procs())

    def running(self) -> State:
        """The state of the running cluster; ClusterError if there is none."""
        state = self.load()
        if state is not None and not self.is_running(state):
            raise ClusterError(
                f"the cluster in {self.workdir} is not running any more (stale state file, "
                f"e.g. after a reboot); `shop-cluster up --workdir {self.workdir}` starts it"
            )
        if state is None:
            raise ClusterError(f"no cluster is running in {self.workdir}")
        return state

    @contextlib.contextmanager
    def locked(self, *, create: bool = False) -> Iterator[None]:
        """Serialise commands that change the cluster (e.g. a `scale` and a `kill`).
        Only `up` creates the workdir; the others find nothing to do without one."""
        if create:
            self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        elif not self.workdir.is_dir():
            raise ClusterError(f"no cluster is running in {self.workdir}")
        with open(self.workdir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -------------------------------------------------------------------- up
    def up(
        self,
        *,
        replicas: int = DEFAULT_REPLICAS,
        port: int = DEFAULT_PORT,
        redis: str = "single",
        redis_replicas: int = 1,
    ) -> State:
        """Start the store, `replicas` shop replicas and nginx; return once all are ready.

        `redis` is ``single`` (one redis-server) or ``ha`` (a primary,
        `redis_replicas` replicas and three Sentinels; the shop connects through
        the Sentinels). With two or more Redis replicas, one is left to
        acknowledge writes after a failover, so writes need not pause.
        """
        if replicas < 1:
            raise ClusterError("--replicas must be at least 1")
        if not 1 <= redis_replicas <= 5:
            raise ClusterError("--redis-replicas must be between 1 and 5")
        if redis_replicas != 1 and redis != "ha":
            raise ClusterError("--redis-replicas needs --redis ha")
        if redis not in REDIS_MODES:
            raise ClusterError(f"--redis must be one of {', '.join(REDIS_MODES)}")
        # Fail before starting anything when a binary is missing.
        procs.find_binary("redis-server")
        procs.find_binary("nginx")
        with self.locked(create=True):
            old = self.load()
            if self.is_running(old):
                raise ClusterError(
                    f"a cluster is already running in {self.workdir} at {old.url}; "
                    f"use `shop-cluster status` or `shop-cluster down` first"
                )
            if procs.port_is_open(port):
                raise ClusterError(f"port {port} is already in use; choose another with --port")
            state = State(
                port=port,
                redis=Proc("redis", procs.free_port()) if redis == "single" else None,
                nginx=Proc("nginx", port),
                replicas=[Proc(f"{REPLICA_PREFIX}{i}", 0) for i in range(1, replicas + 1)],
                boot_id=procs.boot_id(),
            )
            if redis == "ha":
                state.redis_nodes = [
                    Proc(f"{ha.NODE_PREFIX}{i}", procs.free_port())
                    for i in range(1, redis_replicas + 2)
                ]
                state.sentinels = [
                    Proc(f"{ha.SENTINEL_PREFIX}{i}", procs.free_port())
                    for i in range(1, ha.SENTINELS + 1)
                ]
            self.log_dir.mkdir(parents=True, exist_ok=True)
            try:
                if state.ha:
                    self._start_ha_store(state)
                else:
                    self._start_redis(state)
                self.save(state)
                for replica in state.replicas:
                    replica.port = procs.free_port()
                    self._spawn_replica(replica, state)
                    self.save(state)
                for replica in state.replicas:
                    self._wait_replica_ready(replica)
                self._start_nginx(state)
                self.save(state)
            except BaseException:
                # A half-started cluster is worse than none: stop what we started.
                self._stop_all(state)
                raise
            return state

    def _start_redis(self, state: State) -> None:
        self._start_node(state.redis, self.redis_dir)

    def _start_node(self, node: Proc, folder: Path, extra: dict[str, str] | None = None) -> None:
        try:
            popen = procs.start_redis(folder, node.port, extra=extra, timeout=READY_TIMEOUT)
        except TimeoutError:
            raise ClusterError(f"{node.name} did not start; see {folder / 'redis.log'}")
        node.record(popen)

    # ------------------------------------------------------- HA (Sentinel) store
    def store_dir(self, proc: Proc) -> Path:
        """Where an HA node or Sentinel keeps its config, data and log."""
        return self.workdir / proc.name

    def _start_ha_store(self, state: State) -> None:
        """redis-1 as primary, redis-2.. its replicas, then three Sentinels watching redis-1."""
        first, *others = state.redis_nodes
        self._start_node(first, self.store_dir(first), dict(ha.NODE_SETTINGS))
        for node in others:
            self._start_ha_node(node, first.port)
        self.save(state)
        for sentinel in state.sentinels:
            self._start_sentinel(sentinel, first.port, fresh=True)
        # Ready means: every Sentinel sees the primary, its replica and its peers,
        # so a failover can be agreed on from the first second.
        _wait(
            lambda: all(
                (h := ha.sentinel_health(s.port)).get("ok")
                and h["replicas"] == len(others)
                and h["other_sentinels"] == len(state.sentinels) - 1
                for s in state.sentinels
            ),
            "the Sentinels to discover the replica and each other",
        )

    def _start_ha_node(self, node: Proc, primary_port: int | None) -> None:
        """Start a node as a replica of `primary_port` (None: on its own, as primary)."""
        extra = dict(ha.NODE_SETTINGS)
        if primary_port and primary_port != node.port:
            extra["replicaof"] = f"{procs.LOOPBACK} {primary_port}"
        self._start_node(node, self.store_dir(node), extra)

    def _start_sentinel(self, sentinel: Proc, primary_port: int, *, fresh: bool) -> None:
        folder = self.store_dir(sentinel)
        try:
            popen = ha.start_sentinel(folder, sentinel.port, primary_port, fresh=fresh)
        except TimeoutError:
            raise ClusterError(f"{sentinel.name} did not start; see {folder / 'sentinel.log'}")
        sentinel.record(popen)

    def current_primary(self, state: State) -> Proc | None:
        """The HA node the Sentinels name as primary now (None if none answers)."""
        port = ha.primary_port([s.port for s in state.sentinels if s.alive()])
        return next((n for n in state.redis_nodes if n.port == port), None)

    def redis_url(self, state: State) -> str:
        """The REDIS_URL the shop replicas get: the single Redis, or the Sentinels."""
        if state.ha:
            return ha.sentinel_url([s.port for s in state.sentinels])
        return f"redis://{procs.LOOPBACK}:{state.redis.port}/0"

    def _redis_port_now(self, state: State) -> int | None:
        """Where to read cluster data (heartbeats) right now."""
        if not state.ha:
            return state.redis.port
        primary = self.current_primary(state)
        return primary.port if primary else None

    def _secret_key(self) -> str:
        """The cluster's SECRET_KEY: made once, kept in the workdir (mode 0600), never committed."""
        try:
            fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self.secret_file.read_text().strip()
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        return self.secret_file.read_text().strip()

    def replica_env(self, replica: Proc, state: State) -> dict[str, str]:
        """The environment of one gunicorn replica (the shop reads its settings from it)."""
        bind = f"{procs.LOOPBACK}:{replica.port}"
        acks = HA_DEFAULT_ACKS if state.ha else {}
        return {
            **acks,
            **os.environ,
            "REDIS_URL": self.redis_url(state),
            "SECRET_KEY": self._secret_key(),
            "REPLICA_NAME": replica.name,
            "SHOP_BIND": bind,
            "PYTHONUNBUFFERED": "1",
            # Where this replica's workers add up their metrics: inside the
            # workdir, one folder per replica (emptied by gunicorn at start).
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "metrics" / replica.name),
        }

    def _replica_argv(self, replica: Proc) -> list[str]:
        argv = [
            sys.executable, "-m", "gunicorn",
            "--config", self.gunicorn_config,
            "--bind", f"{procs.LOOPBACK}:{replica.port}",
            "--name", replica.name,
        ]  # fmt: skip
        if _gunicorn_has_control_socket():
            # gunicorn 25.1+ would put every master's control socket at
            # ~/.gunicorn/gunicorn.ctl: replicas would collide (and it is
            # outside the workdir).
            argv.append("--no-control-socket")
        return [*argv, self.wsgi_app]

    def _spawn_replica(self, replica: Proc, state: State) -> None:
        env = self.replica_env(replica, state)
        # prometheus_client writes there from the first metric on, which may
        # come before gunicorn's on_starting hook would create the folder.
        Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        popen = procs.spawn(
            self._replica_argv(replica),
            log_path=self.log_dir / f"{replica.name}.log",
            env=env,
            cwd=self.workdir,
        )
        replica.record(popen)

    def _wait_replica_ready(self, replica: Proc) -> None:
        log = self.log_dir / f"{replica.name}.log"

        def ready() -> bool:
            if not procs.pid_alive(replica.pid):
                raise ClusterError(f"{replica.name} exited at start; see {log}:\n{_tail(log)}")
            return _http_ok(f"http://{procs.LOOPBACK}:{replica.port}/readyz")

        _wait(ready, f"{replica.name} to answer /readyz (log: {log})")

    def _write_nginx_conf(self, state: State) -> None:
        (self.nginx_dir / "tmp").mkdir(parents=True, exist_ok=True)
        text = nginxconf.render_local(
            prefix=self.nginx_dir,
            port=state.port,
            replica_ports=[r.port for r in state.replicas],
            log_dir=self.log_dir,
        )
        tmp = self.nginx_conf.with_suffix(".new")
        tmp.write_text(text)
        check = subprocess.run(
            [*self._nginx_argv(tmp), "-t", "-q"], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise ClusterError(f"nginx rejected the rendered config {tmp}: {check.stderr.strip()}")
        tmp.replace(self.nginx_conf)

    def _nginx_argv(self, conf: Path) -> list[str]:
        # -e: the error log before the config is read (the compiled-in default
        # is under /var/log, not writable without root).
        return [
            procs.find_binary("nginx"),
            "-p", str(self.nginx_dir),
            "-e", str(self.log_dir / "nginx-error.log"),
            "-c", str(conf),
        ]  # fmt: skip

    def _start_nginx(self, state: State) -> None:
        if procs.port_is_open(state.port):
            raise ClusterError(f"port {state.port} is already in use; choose another with --port")
        self._write_nginx_conf(state)
        popen = procs.spawn(self._nginx_argv(self.nginx_conf), log_path=self.log_dir / "nginx.log")
        state.nginx.record(popen)
        log = self.log_dir / "nginx-error.log"

        def ready() -> bool:
            if not procs.pid_alive(popen.pid):
                raise ClusterError(f"nginx exited at start; see {log}:\n{_tail(log)}")
            return _http_ok(f"{state.url.rstrip('/')}{nginxconf.HEALTH_PATH}")

        _wait(ready, f"nginx on port {state.port} (log: {log})")

    # ------------------------------------------------------------------ down
    def down(self) -> State | None:
        """Stop everything recorded; return the state stopped (None if nothing was up)."""
        if not self.state_file.exists():
            return None
        with self.locked():
            state = self.load()
            if state is None:
                return None
            self._stop_all(state)
            self.state_file.unlink(missing_ok=True)
            return state

    def _stop_all(self, state: State) -> None:
        # Front to back: no new requests, then replicas finish theirs, then
        # Redis (SIGTERM makes it flush its append-only file).
        if state.nginx.alive():
            procs.stop_process(state.nginx.pid, timeout=10)
        live = [r.pid for r in state.replicas if r.alive()]
        procs.stop_many(live, timeout=GRACEFUL_TIMEOUT)
        # Sentinels first, so none starts a failover while the nodes go down.
        for store in sorted(state.stores(), key=lambda p: p not in state.sentinels):
            if store.alive():
                procs.stop_process(store.pid, timeout=15)

    # ------------------------------------------------------------ kill/start
    def kill(self, name: str) -> Proc:
        """SIGKILL a process's whole group, as a crash would (a gunicorn master's
        workers would otherwise go on serving)."""
        with self.locked():
            state = self.running()
            proc = self._resolve(state, name)
            if not proc.alive():
                raise ClusterError(f"{proc.name} is not running")
            pid = proc.pid
            procs.signal_group(pid, signal.SIGKILL)
            _wait(
                lambda: not procs.pid_alive(pid) and not procs.group_pids(pid),
                f"{proc.name} to die",
            )
            return proc

    def _resolve(self, state: State, name: str) -> Proc:
        """`name`, or the node that is primary now for ``redis-primary`` (HA only)."""
        if name != ha.PRIMARY_ALIAS:
            return state.find(name)
        if not state.ha:
            raise ClusterError(f"{name} exists only in HA mode (`up --redis ha`); try `redis`")
        primary = self.current_primary(state)
        if primary is None:
            raise ClusterError("no Sentinel names a primary right now")
        return primary

    def start(self, name: str) -> Proc:
        """Start a stopped or killed process again, on the same port."""
        with self.locked():
            state = self.running()
            proc = state.find(name)
            if proc.alive():
                raise ClusterError(f"{name} is already running (pid {proc.pid})")
            if procs.port_is_open(proc.port):
                raise ClusterError(f"port {proc.port} of {name} is taken by another process")
            if proc is state.redis:
                self._start_redis(state)
            elif proc in state.redis_nodes:
                # A node coming back (say, the old primary) starts as a replica
                # of the current primary: Sentinel would demote it anyway, and
                # this way it never serves a moment as a stale primary.
                primary = self.current_primary(state)
                self._start_ha_node(proc, primary.port if primary else None)
            elif proc in state.sentinels:
                first = state.redis_nodes[0].port  # only read if its config is gone
                self._start_sentinel(proc, first, fresh=False)
            elif proc is state.nginx:
                self._start_nginx(state)
            else:
                self._spawn_replica(proc, state)
                self._wait_replica_ready(proc)
            self.save(state)
            return proc

    # ----------------------------------------------------------------- scale
    def scale(self, count: int) -> tuple[list[Proc], list[Proc]]:
        """Grow or shrink to `count` replicas; return (added, removed).

        New replicas join nginx only once ready. Leaving replicas go out of
        nginx first (reload, old workers drained), then get SIGTERM, so their
        in-flight requests finish.
        """
        if count < 1:
            raise ClusterError("a cluster needs at least 1 replica")
        with self.locked():
            state = self.running()
            added: list[Proc] = []
            removed: list[Proc] = []
            if count > len(state.replicas):
                number = max(_replica_number(r.name) for r in state.replicas)
                for _ in range(count - len(state.replicas)):
                    number += 1
                    added.append(Proc(f"{REPLICA_PREFIX}{number}", procs.free_port()))
                try:
                    for replica in added:
                        self._spawn_replica(replica, state)
                    for replica in added:
                        self._wait_replica_ready(replica)
                except BaseException:
                    procs.stop_many([r.pid for r in added if r.alive()], timeout=10)
                    raise
                state.replicas.extend(added)
                self.save(state)
                self._reload_nginx(state)
            elif count < len(state.replicas):
                removed = state.replicas[count:]
                state.replicas = state.replicas[:count]
                self._reload_nginx(state)
                procs.stop_many([r.pid for r in removed if r.alive()], timeout=GRACEFUL_TIMEOUT)
                self.save(state)
            return added, removed

    def _reload_nginx(self, state: State) -> None:
        """Re-render the config and reload nginx; wait until no old worker is left."""
        self._write_nginx_conf(state)
        if not state.nginx.alive():
            return  # it reads the new config when started
        master = state.nginx.pid
        old_workers = procs.child_pids(master)
        os.kill(master, signal.SIGHUP)
        # The master starts new workers and old ones finish their requests and
        # exit: only then has no request any path left to a removed replica.
        _wait(
            lambda: not (procs.child_pids(master) & old_workers) and bool(procs.child_pids(master)),
            "nginx to reload (old workers to finish)",
            timeout=NGINX_DRAIN_TIMEOUT,
        )

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """What `status --json` prints: each process, whether it runs and answers."""
        state = self.running()

        def entry(proc: Proc, ready: bool) -> dict[str, Any]:
            return {
                "name": proc.name,
                "pid": proc.pid,
                "port": proc.port,
                "alive": proc.alive(),
                "ready": ready,
            }

        redis_port = self._redis_port_now(state)
        redis_ready = redis_port is not None and _redis_ping(redis_port)
        nginx_ready = state.nginx.alive() and _http_ok(
            f"{state.url.rstrip('/')}{nginxconf.HEALTH_PATH}"
        )
        beats = _heartbeats(redis_port) if redis_ready else {}
        nginx = entry(state.nginx, nginx_ready)
        if nginx_ready:
            nginx.update(_stub_status(f"{state.url.rstrip('/')}{nginxconf.STATUS_PATH}"))
        replicas = []
        for r in state.replicas:
            replica = entry(r, r.alive() and _http_ok(f"http://{procs.LOOPBACK}:{r.port}/readyz"))
            beat = beats.get(r.name)
            # From the replica's heartbeats in Redis (shop/heartbeat.py).
            replica["heartbeat"] = bool(beat and beat.alive)
            replica["requests"] = beat.requests_total if beat else None
            replica["requests_last_minute"] = beat.requests_last_minute if beat else None
            replicas.append(replica)
        if state.ha:
            redis_status = self._ha_status(state, entry)
        else:
            redis_status = entry(state.redis, redis_ready)
        return {
            "url": state.url,
            "workdir": str(self.workdir),
            "redis": redis_status,
            "nginx": nginx,
            "replicas": replicas,
        }

    def _ha_status(self, state: State, entry: Callable[[Proc, bool], dict[str, Any]]) -> dict:
        """The HA store: who is primary now (per Sentinel), each node's role, each Sentinel."""
        primary = self.current_primary(state)
        nodes = []
        for node in state.redis_nodes:
            info = ha.node_info(node.port) if node.alive() else ha.NodeInfo(role=None)
            row = entry(node, info.role is not None)
            row["role"] = {"master": "primary", "slave": "replica"}.get(info.role or "", "down")
            if info.role == "slave":
                row["replica_of"] = info.primary_port
                row["link_up"] = info.link_up
            nodes.append(row)
        sentinels = []
        for sentinel in state.sentinels:
            health = ha.sentinel_health(sentinel.port) if sentinel.alive() else {"ok": False}
            row = entry(sentinel, health.pop("ok"))
            row.update(health)
            sentinels.append(row)
        return {
            "mode": "ha",
            "name": "redis",
            "service": ha.SERVICE,
            "url": self.redis_url(state),
            "primary": primary.name if primary else None,
            "alive": any(n["alive"] for n in nodes),
            "ready": primary is not None and any(n["ready"] for n in nodes),
            "nodes": nodes,
            "sentinels": sentinels,
        }


# --------------------------------------------------------------------- helpers
def _wait(condition, what: str, timeout: float = READY_TIMEOUT) -> None:
    """procs.wait_until, but a ClusterError from the condition stops the wait at once."""
    error: list[ClusterError] = []

    def check() -> bool:
        try:
            return condition()
        except ClusterError as exc:
            error.append(exc)
            return True

    try:
        procs.wait_until(check, timeout=timeout, what=what)
    except TimeoutError as exc:
        raise ClusterError(str(exc))
    if error:
        raise error[0]


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _redis_ping(port: int) -> bool:
    try:
        return procs._redis_ping(port)
    except OSError:
        return False


def _heartbeats(port: int) -> dict[str, Any]:
    """The replicas' heartbeats by name (empty if Redis cannot be read)."""
    import redis

    from shop import heartbeat  # Redis only, no Flask app: the launcher still never runs the app

    client = redis.Redis(host=procs.LOOPBACK, port=port, socket_timeout=2, decode_responses=True)
    try:
        return {view.name: view for view in heartbeat.read_cluster(client)}
    except redis.RedisError:
        return {}
    finally:
        client.close()


def _stub_status(url: str) -> dict[str, int]:
    """nginx's stub_status as numbers: active connections and requests handled."""
    try:
        lines = requests.get(url, timeout=2).text.splitlines()
        _accepted, handled, total = (int(n) for n in lines[2].split())
        active = int(lines[0].rsplit(":", 1)[1])
    except (requests.RequestException, IndexError, ValueError):
        return {}
    return {"active_connections": active, "connections": handled, "requests": total}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _replica_number(name: str) -> int:
    return int(name.removeprefix(REPLICA_PREFIX))


def _gunicorn_has_control_socket() -> bool:
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        return False
    return any(s.name == "control_socket" for s in KNOWN_SETTINGS)
