"""The local cluster as plain processes: the store, N gunicorn replicas, nginx.

`Cluster(workdir)` does what the `shop-cluster` subcommands say, and only
orchestrates: in which order things start and stop, under the workdir's lock,
recorded in its state file. Each kind of process has its own module, as in a
process manager such as honcho:

    state.py     Proc, State, Workdir: the state file (load, save, lock), paths
    store.py     the Redis store, single or HA (ha.py: nodes and Sentinels)
    appserver.py the shop's replicas (gunicorn): command line, environment, readiness
    nginxconf.py nginx: config from the one template, command line, start, reload
    status.py    probes and the data of `status --json`
    procs.py     pids, signals, waits: the helpers the tests and benchmarks share
    output.py    the status table and the merged logs; cli.py parses and prints

Every process is signalled by the pid we recorded, checked against its start
time, so a stale state file never makes us signal a stranger.
"""

from __future__ import annotations

import signal

from . import appserver, ha, nginxconf, procs, status, store
from .procs import ClusterError
from .state import DEFAULT_WORKDIR, Proc, State, Workdir

DEFAULT_PORT = 8080
DEFAULT_REPLICAS = 3
# gunicorn's graceful timeout is 30 s; give in-flight requests that long.
GRACEFUL_TIMEOUT = 35.0
# How long the group of a SIGKILLed process may take to be gone: the kernel
# reaps a killed process at once; a second covers a loaded machine many times.
KILL_TIMEOUT = 10.0


class Cluster:
    """One cluster, identified by its workdir; several can run side by side."""

    def __init__(self, workdir: Workdir | str = DEFAULT_WORKDIR) -> None:
        self.workdir = workdir if isinstance(workdir, Workdir) else Workdir(workdir)

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
        if not 1 <= redis_replicas <= ha.MAX_REPLICAS:
            raise ClusterError(f"--redis-replicas must be between 1 and {ha.MAX_REPLICAS}")
        if redis_replicas != 1 and redis != "ha":
            raise ClusterError("--redis-replicas needs --redis ha")
        if redis not in store.MODES:
            raise ClusterError(f"--redis must be one of {', '.join(store.MODES)}")
        # Fail before starting anything when a binary is missing.
        procs.find_binary("redis-server")
        procs.find_binary("nginx")
        with self.workdir.locked(create=True):
            old = self.workdir.load()
            if old is not None and old.any_alive():
                raise ClusterError(
                    f"a cluster is already running in {self.workdir} at {old.url}; "
                    f"use `shop-cluster status` or `shop-cluster down` first"
                )
            if procs.port_is_open(port):
                raise ClusterError(f"port {port} is already in use; choose another with --port")
            state = State(
                port=port,
                redis=None,
                nginx=Proc("nginx", port),
                replicas=[Proc(f"{appserver.PREFIX}{i}", 0) for i in range(1, replicas + 1)],
                boot_id=procs.boot_id(),
            )
            store.plan(state, redis, redis_replicas)
            self.workdir.log_dir.mkdir(parents=True, exist_ok=True)
            try:
                store.start(self.workdir, state)
                self.workdir.save(state)
                for replica in state.replicas:
                    replica.port = procs.free_port()
                    appserver.spawn(self.workdir, replica, state)
                    self.workdir.save(state)
                for replica in state.replicas:
                    appserver.wait_ready(self.workdir, replica)
                nginxconf.start(self.workdir, state)
                self.workdir.save(state)
            except BaseException:
                # A half-started cluster is worse than none: stop what we started.
                self._stop_all(state)
                raise
            return state

    # ------------------------------------------------------------------ down
    def down(self) -> State | None:
        """Stop everything recorded; return the state stopped (None if nothing was up)."""
        if not self.workdir.state_file.exists():
            return None
        with self.workdir.locked():
            state = self.workdir.load()
            if state is None:
                return None
            self._stop_all(state)
            self.workdir.state_file.unlink(missing_ok=True)
            return state

    def _stop_all(self, state: State) -> None:
        # Front to back: no new requests, then replicas finish theirs, then
        # Redis (SIGTERM makes it flush its append-only file).
        if state.nginx.alive():
            procs.stop_process(state.nginx.pid, timeout=10)
        live = [r.pid for r in state.replicas if r.alive()]
        procs.stop_many(live, timeout=GRACEFUL_TIMEOUT)
        # Sentinels first, so none starts a failover while the nodes go down.
        for proc in sorted(state.stores(), key=lambda p: p not in state.sentinels):
            if proc.alive():
                procs.stop_process(proc.pid, timeout=15)

    # ------------------------------------------------------------ kill/start
    def kill(self, name: str) -> Proc:
        """SIGKILL a process's whole group, as a crash would (a gunicorn master's
        workers would otherwise go on serving); return once the group is gone."""
        with self.workdir.locked():
            state = self.workdir.running()
            proc = store.resolve(state, name)
            if not proc.alive():
                raise ClusterError(f"{proc.name} is not running")
            pid = proc.pid
            procs.signal_group(pid, signal.SIGKILL)
            procs.wait_for(
                lambda: not procs.pid_alive(pid) and not procs.group_pids(pid),
                f"{proc.name} to die",
                timeout=KILL_TIMEOUT,
            )
            return proc

    def start(self, name: str) -> Proc:
        """Start a stopped or killed process again, on the same port."""
        with self.workdir.locked():
            state = self.workdir.running()
            proc = state.find(name)
            if proc.alive():
                raise ClusterError(f"{name} is already running (pid {proc.pid})")
            if procs.port_is_open(proc.port):
                raise ClusterError(f"port {proc.port} of {name} is taken by another process")
            if proc in state.stores():
                store.restart(self.workdir, state, proc)
            elif proc is state.nginx:
                nginxconf.start(self.workdir, state)
            else:
                appserver.spawn(self.workdir, proc, state)
                appserver.wait_ready(self.workdir, proc)
            self.workdir.save(state)
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
        with self.workdir.locked():
            state = self.workdir.running()
            added: list[Proc] = []
            removed: list[Proc] = []
            if count > len(state.replicas):
                number = max(appserver.number(r) for r in state.replicas)
                for _ in range(count - len(state.replicas)):
                    number += 1
                    added.append(Proc(f"{appserver.PREFIX}{number}", procs.free_port()))
                try:
                    for replica in added:
                        appserver.spawn(self.workdir, replica, state)
                    for replica in added:
                        appserver.wait_ready(self.workdir, replica)
                except BaseException:
                    procs.stop_many([r.pid for r in added if r.alive()], timeout=10)
                    raise
                state.replicas.extend(added)
                self.workdir.save(state)
                nginxconf.reload(self.workdir, state)
            elif count < len(state.replicas):
                removed = state.replicas[count:]
                state.replicas = state.replicas[:count]
                nginxconf.reload(self.workdir, state)
                procs.stop_many([r.pid for r in removed if r.alive()], timeout=GRACEFUL_TIMEOUT)
                self.workdir.save(state)
            return added, removed

    # ---------------------------------------------------------------- status
    def status(self) -> dict:
        """What `status --json` prints (see status.py)."""
        return status.collect(self.workdir, self.workdir.running())
