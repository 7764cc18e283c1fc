"""The local cluster as plain processes: the store, N gunicorn replicas, nginx.

`Cluster(workdir)` does what the `shop-cluster` subcommands say, and only
orchestrates: in which order things start and stop, under the workdir's lock,
recorded in its state file. Each kind of process has its own module, as in a
process manager such as honcho:

    state.py     Proc, State, Workdir: the state file (load, save, lock), paths
    store.py     the Redis store, single or HA (ha.py: nodes and Sentinels)
    appserver.py the shop's replicas (gunicorn): command line, environment, readiness
    nginxconf.py nginx: config from the one template, command line, start, reload
    autoscaler.py the autoscaler process: follows the load with `scale`
                 (scalepolicy.py: its rules)
    watchdog.py  the watchdog beside each nginx: probes /readyz, takes hung replicas out
    hosts.py     `up --hosts`: which host runs which process (netns.py makes the
                 hosts: namespaces, links, the bridge, partitions; keepalived.py
                 the virtual IP between the load balancers)
    status.py    probes and the data of `status --json`
    procs.py     pids, signals, waits: the helpers the tests and benchmarks share
    output.py    the status table and the merged logs; cli.py parses and prints
    timeline.py  the journal of events (kill, freeze, power-off...) and requests
                 over time; chart.py draws them

What the commands do to the cluster (kill, start, freeze, thaw, scale,
power-off, power-on, partition, heal) is journalled with its time in
WORKDIR/events.jsonl, so a timeline chart can mark it.

Every process is signalled by the pid we recorded, checked against its start
time, so a stale state file never makes us signal a stranger.
"""

from __future__ import annotations

import os
import signal

from . import (
    appserver,
    autoscaler,
    ha,
    hosts,
    keepalived,
    netns,
    nginxconf,
    procs,
    status,
    store,
    watchdog,
)
from .netns import Host
from .procs import ClusterError
from .scalepolicy import Policy
from .state import APP_STATES, DEFAULT_WORKDIR, STATE_REDIS, Proc, State, Workdir
from .timeline import EventLog

DEFAULT_PORT = 8080
DEFAULT_REPLICAS = 3
# gunicorn's graceful timeout is 30 s; give in-flight requests that long.
GRACEFUL_TIMEOUT = 35.0
# How long the group of a SIGKILLed process may take to be gone: the kernel
# reaps a killed process at once; a second covers a loaded machine many times.
KILL_TIMEOUT = 10.0
# How long the autoscaler may take to stop: it first finishes a scale it has
# begun, new replicas ready (procs.READY_TIMEOUT) and nginx reloaded
# (nginxconf.DRAIN_TIMEOUT), or leaving ones drained (GRACEFUL_TIMEOUT).
AUTOSCALER_STOP_TIMEOUT = procs.READY_TIMEOUT + nginxconf.DRAIN_TIMEOUT + 5.0
# How long every process of a group may take to show as stopped after SIGSTOP
# (or running after SIGCONT): the kernel does it at once; this covers a loaded machine.
FREEZE_TIMEOUT = 5.0


class Cluster:
    """One cluster, identified by its workdir; several can run side by side."""

    def __init__(self, workdir: Workdir | str = DEFAULT_WORKDIR) -> None:
        self.workdir = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
        self.events = EventLog(self.workdir.events_file)

    # -------------------------------------------------------------------- up
    def up(
        self,
        *,
        replicas: int = DEFAULT_REPLICAS,
        port: int | None = None,
        redis: str = "single",
        redis_replicas: int | None = None,
        on_hosts: bool = False,
        app_state: str = STATE_REDIS,
        autoscale: Policy | None = None,
        with_watchdog: bool = True,
    ) -> State:
        """Start the store, `replicas` shop replicas, nginx and its watchdog; return
        once all are ready.

        `redis` is ``single`` (one redis-server) or ``ha`` (a primary,
        `redis_replicas` replicas, by default ``ha.DEFAULT_REPLICAS``, and three
        Sentinels; the shop connects through the Sentinels). With two or more
        Redis replicas, one is left to acknowledge writes after a failover, so
        writes need not pause.

        `on_hosts` puts every process on a host of its own (a network namespace,
        see hosts.py), with two load balancers sharing a virtual IP; it needs root.
        `port` defaults to 8080 on loopback and 80 on hosts.

        `app_state` ``memory`` (a demonstration) keeps sessions and carts in
        each replica's memory, one gunicorn worker each, behind nginx's
        sticky hash: what is lost when a replica dies (`demo --contrast`).

        `autoscale`: then the autoscaler too, which keeps the replicas within its
        range (start with `replicas` inside it) on the requests in flight.

        Without `with_watchdog`, nginx is on its own, as open-source nginx is: it
        learns of a hung replica only from requests that time out.
        """
        if port is None:
            port = hosts.DEFAULT_PORT if on_hosts else DEFAULT_PORT
        if replicas < 1:
            raise ClusterError("--replicas must be at least 1")
        if redis_replicas is not None and redis != "ha":
            raise ClusterError("--redis-replicas needs --redis ha")
        if redis_replicas is None:
            redis_replicas = ha.DEFAULT_REPLICAS
        if not 1 <= redis_replicas <= ha.MAX_REPLICAS:
            raise ClusterError(f"--redis-replicas must be between 1 and {ha.MAX_REPLICAS}")
        if redis not in store.MODES:
            raise ClusterError(f"--redis must be one of {', '.join(store.MODES)}")
        if app_state not in APP_STATES:
            raise ClusterError(f"--state must be one of {', '.join(APP_STATES)}")
        if autoscale is not None:
            _check_autoscalable(on_hosts)
            if not autoscale.minimum <= replicas <= autoscale.maximum:
                raise ClusterError(
                    f"--replicas {replicas} is outside --autoscale "
                    f"{autoscale.minimum}:{autoscale.maximum}"
                )
        # Fail before starting anything when a binary is missing.
        procs.find_binary("redis-server")
        procs.find_binary("nginx")
        if on_hosts:
            reason = netns.unavailable()
            if reason:
                raise ClusterError(f"{reason}; without --hosts the cluster runs on loopback")
            procs.find_binary("keepalived")
            procs.find_binary("curl")  # keepalived's check of its nginx
        with self.workdir.locked(create=True):
            old = self.workdir.load()
            if old is not None and old.any_alive():
                raise ClusterError(
                    f"a cluster is already running in {self.workdir} at {old.url}; "
                    f"use `shop-cluster status` or `shop-cluster down` first"
                )
            if not on_hosts and procs.port_is_open(port):
                raise ClusterError(f"port {port} is already in use; choose another with --port")
            state = State(
                port=port,
                redis_password=self.workdir.redis_password(),
                redis=None,
                nginx=Proc("nginx", port),
                replicas=[Proc(f"{appserver.PREFIX}{i}", 0) for i in range(1, replicas + 1)],
                boot_id=procs.boot_id(),
                app_state=app_state,
            )
            store.plan(state, redis, redis_replicas)
            self.workdir.log_dir.mkdir(parents=True, exist_ok=True)
            self.events.clear()  # a new cluster, a new journal
            try:
                if on_hosts:
                    self._make_hosts(state)
                if with_watchdog:
                    state.watchdogs = watchdog.plan(state)
                nginxconf.forget(self.workdir, state)  # every replica in rotation
                store.start(self.workdir, state)
                self.workdir.save(state)
                for replica in state.replicas:
                    replica.port = replica.port or procs.free_port()
                    appserver.spawn(self.workdir, replica, state)
                    self.workdir.save(state)
                for replica in state.replicas:
                    appserver.wait_ready(self.workdir, replica)
                for nginx in state.balancers():
                    nginxconf.start(self.workdir, state, nginx)
                    self.workdir.save(state)
                for proc in state.watchdogs:
                    self._start_watchdog(state, proc)
                    self.workdir.save(state)
                if on_hosts:
                    self._start_keepalived(state)
                if autoscale is not None:
                    state.autoscale = autoscale
                    self._start_autoscaler(state)
            except BaseException:
                # A half-started cluster is worse than none: stop what we started.
                self._stop_all(state)
                raise
            return state

    def _make_hosts(self, state: State) -> None:
        """Choose a free /24, place every process on a host, record all of it, then
        make the namespaces, links and bridge (a crash half-way leaves a state
        file that names everything `down` must remove)."""
        netns.sweep(netns.network_id(self.workdir.path))  # a crashed run's, same names
        with netns.subnet_lock():
            hosts.plan(state, self.workdir, netns.free_subnet())
            self.workdir.save(state)
            netns.create(state.network)

    def _start_keepalived(self, state: State) -> None:
        """keepalived on lb-1 first, until it holds the virtual IP; then the others
        as its backups (a deterministic first election: lb-1 serves)."""
        first, *others = state.keepalived
        keepalived.start(self.workdir, first, hosts.keepalived_settings(state, first))
        self.workdir.save(state)
        lbs = hosts.balancer_hosts(state)
        keepalived.wait_for_election(self.workdir, state.network, lbs, lbs[0], first)
        for proc in others:
            keepalived.start(self.workdir, proc, hosts.keepalived_settings(state, proc))
            self.workdir.save(state)

    # ------------------------------------------------------------------ down
    def down(self) -> State | None:
        """Stop everything recorded and remove the hosts made for it; return the
        state stopped (None if nothing was up)."""
        if not self.workdir.state_file.exists():
            self._sweep_hosts()
            return None
        self._stop_autoscaler()  # before the lock: it may need it to finish a scale
        with self.workdir.locked():
            state = self.workdir.load()
            if state is None:
                return None
            self._stop_all(state)
            self.workdir.state_file.unlink(missing_ok=True)
            return state

    def _stop_all(self, state: State) -> None:
        # Front to back: no new requests, then replicas finish theirs, then
        # Redis (SIGTERM makes it flush its append-only file). The autoscaler
        # first, so that it starts nothing; keepalived next: stopped, it takes
        # the virtual IP away.
        if state.autoscaler and state.autoscaler.alive():
            procs.stop_process(state.autoscaler.pid, timeout=AUTOSCALER_STOP_TIMEOUT)
        for proc in state.keepalived:
            if proc.alive():
                procs.stop_process(proc.pid, timeout=10)
        # The watchdogs before nginx: they would take stopping replicas out of rotation.
        for proc in state.watchdogs:
            if proc.alive():
                procs.stop_process(proc.pid, timeout=10)
        for nginx in state.balancers():
            if nginx.alive():
                procs.stop_process(nginx.pid, timeout=10)
        live = [r.pid for r in state.replicas if r.alive()]
        procs.stop_many(live, timeout=GRACEFUL_TIMEOUT)
        # Sentinels first, so none starts a failover while the nodes go down.
        for proc in sorted(state.stores(), key=lambda p: p not in state.sentinels):
            if proc.alive():
                procs.stop_process(proc.pid, timeout=15)
        if state.network is not None:
            # Whatever still runs on a host (a keepalived child, a frozen
            # process) dies with it; the namespaces, links and bridge go.
            netns.destroy(state.network)

    def _sweep_hosts(self) -> None:
        """Remove hosts named after this workdir that no state file records (the
        launcher died before writing it); nothing to do on loopback clusters."""
        if os.geteuid() == 0:
            netns.sweep(netns.network_id(self.workdir.path))

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
            self.events.record("kill", proc.name)
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
            if proc.frozen():
                raise ClusterError(f"{name} is frozen, not stopped: `shop-cluster thaw {name}`")
            if proc.alive():
                raise ClusterError(f"{name} is already running (pid {proc.pid})")
            host = hosts.host_of(state, proc)
            if host is not None and host.name in state.network.powered_off:
                raise ClusterError(
                    f"{name} runs on {host.name}, which is powered off; "
                    f"`shop-cluster power-on {host.name}` boots it with all its processes"
                )
            if proc.port and procs.port_is_open(proc.port, proc.address):
                raise ClusterError(f"port {proc.port} of {name} is taken by another process")
            self._start(state, proc)
            self.events.record("start", proc.name)
            return proc

    def _start(self, state: State, proc: Proc) -> None:
        """Start one recorded process, the way `up` started it; record its new pid."""
        if proc in state.stores():
            store.restart(self.workdir, state, proc)
        elif proc in state.balancers():
            nginxconf.start(self.workdir, state, proc)
        elif proc in state.keepalived:
            keepalived.start(self.workdir, proc, hosts.keepalived_settings(state, proc))
        elif proc is state.autoscaler:
            autoscaler.spawn(self.workdir, proc, state)
        elif proc in state.watchdogs:
            self._start_watchdog(state, proc)
        else:
            appserver.spawn(self.workdir, proc, state)
            appserver.wait_ready(self.workdir, proc)
        self.workdir.save(state)

    def _start_watchdog(self, state: State, proc: Proc) -> None:
        nginx = watchdog.watched(state, proc)
        watchdog.spawn(self.workdir, proc, nginxconf.balancer(self.workdir, state, nginx))

    # ----------------------------------------------------------- freeze/thaw
    def freeze(self, name: str) -> Proc:
        """Hang a process the way a machine in a swap storm or a deadlocked program
        hangs: SIGSTOP to its whole process group. The kernel still accepts
        connections on its port (into the listen backlog) and buffers what is sent;
        nothing reads or answers. Return once every process of the group is stopped."""
        with self.workdir.locked():
            state = self.workdir.running()
            proc = store.resolve(state, name)
            if not proc.alive():
                raise ClusterError(f"{proc.name} is not running")
            if proc.frozen():
                raise ClusterError(f"{proc.name} is already frozen (`thaw` wakes it)")
            self._stop_or_continue(proc, signal.SIGSTOP, "freeze")
            return proc

    def thaw(self, name: str) -> Proc:
        """Wake a frozen process (SIGCONT to its group): it reads what queued meanwhile."""
        with self.workdir.locked():
            state = self.workdir.running()
            proc = store.resolve(state, name)
            if not proc.frozen():
                raise ClusterError(f"{proc.name} is not frozen")
            self._stop_or_continue(proc, signal.SIGCONT, "thaw")
            return proc

    def _stop_or_continue(self, proc: Proc, sig: int, kind: str) -> None:
        pid = proc.pid
        procs.signal_group(pid, sig)
        self.events.record(kind, proc.name)
        stopping = sig == signal.SIGSTOP
        procs.wait_for(
            lambda: all(procs.is_stopped(p) == stopping for p in procs.group_pids(pid) | {pid}),
            f"{proc.name} to {kind}",
            timeout=FREEZE_TIMEOUT,
        )

    # ------------------------------------------------------------------ hosts
    def power_off(self, name: str) -> tuple[Host, list[int]]:
        """Turn host `name` off the way a machine dies: its cable first (packets
        to and from it vanish, nobody gets a reset or a goodbye), then every
        process on it stops at once and is killed. Return the host and the pids
        that died.

        Its disk stays (the workdir), and so does the kernel it shares with the
        others: what Redis wrote to its append-only file without fsync survives,
        unlike a real power cut.
        """
        with self.workdir.locked():
            state = self.workdir.running()
            net = hosts.network(state)
            host = net.host(name)
            if name in net.powered_off:
                raise ClusterError(f"{name} is already powered off")
            net.powered_off.append(name)
            self.workdir.save(state)  # recorded before it happens, as everything here
            self.events.record("power-off", name)
            netns.set_link(net, host, up=False)
            killed = netns.kill_all(host.netns)
            return host, killed

    def power_on(self, name: str) -> tuple[Host, list[Proc]]:
        """Boot host `name` again: it comes up with only its own address (an
        address keepalived had added lived in the dead machine's memory), its
        cable is plugged back in, and its processes start afresh in boot order
        (a Redis node as a replica of the current primary, a replica answering
        /readyz, nginx, keepalived as a backup). Return the host and its processes."""
        with self.workdir.locked():
            state = self.workdir.running()
            net = hosts.network(state)
            host = net.host(name)
            if name not in net.powered_off:
                raise ClusterError(f"{name} is not powered off")
            netns.forget_addresses(host)
            netns.set_link(net, host, up=True)
            net.powered_off.remove(name)
            self.workdir.save(state)
            self.events.record("power-on", name)
            started = hosts.on(state, host)
            for proc in started:
                self._start(state, proc)
            return host, started

    def partition(self, names: list[str], others: list[str]) -> list[list[str]]:
        """Cut the network between every host of `names` and every one of `others`,
        both ways, while all keep running; return every pair cut now."""
        with self.workdir.locked():
            state = self.workdir.running()
            net = hosts.network(state)
            for name in (*names, *others):
                net.host(name)  # a clear error for an unknown name, before anything changes
            if set(names) & set(others):
                raise ClusterError("a host cannot be partitioned from itself")
            for pair in (sorted((a, b)) for a in names for b in others):
                if pair not in net.partitions:
                    net.partitions.append(pair)
            self.workdir.save(state)
            netns.apply_partitions(net)
            self.events.record("partition", ",".join(names), detail=f"from {','.join(others)}")
            return net.partitions

    def heal(self) -> list[list[str]]:
        """Remove every partition; return the pairs that were cut."""
        with self.workdir.locked():
            state = self.workdir.running()
            net = hosts.network(state)
            healed, net.partitions = net.partitions, []
            netns.apply_partitions(net)
            self.workdir.save(state)
            self.events.record("heal", "network")
            return healed

    # ----------------------------------------------------------------- scale
    def scale(self, count: int, *, by_autoscaler: bool = False) -> tuple[list[Proc], list[Proc]]:
        """Grow or shrink to `count` replicas; return (added, removed).

        New replicas join nginx only once ready. Leaving replicas go out of
        nginx first (reload, old workers drained), then get SIGTERM, so their
        in-flight requests finish. While the autoscaler runs, only it scales
        (`by_autoscaler`): it would undo anyone else's `scale` a moment later.
        """
        if count < 1:
            raise ClusterError("a cluster needs at least 1 replica")
        with self.workdir.locked():
            state = self.workdir.running()
            if state.network is not None:
                raise ClusterError(
                    "scale does not add or remove hosts; start the cluster with "
                    "`up --hosts --replicas N` instead"
                )
            scaler = state.autoscaler
            if not by_autoscaler and scaler is not None and scaler.alive():
                policy = state.autoscale
                raise ClusterError(
                    f"autoscaling is on ({policy.minimum} to {policy.maximum} replicas) and "
                    f"would undo this; change its range with `shop-cluster autoscale MIN:MAX` "
                    f"or turn it off with `shop-cluster autoscale off`"
                )
            added: list[Proc] = []
            removed: list[Proc] = []
            # The journal (timeline charts) says who scaled.
            label = f"autoscaler: {count} replicas" if by_autoscaler else None
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
                nginxconf.reload_all(self.workdir, state)
                self.events.record("scale", f"{count} replicas", label=label)
            elif count < len(state.replicas):
                removed = state.replicas[count:]
                state.replicas = state.replicas[:count]
                nginxconf.reload_all(self.workdir, state)
                procs.stop_many([r.pid for r in removed if r.alive()], timeout=GRACEFUL_TIMEOUT)
                self.workdir.save(state)
                self.events.record("scale", f"{count} replicas", label=label)
            return added, removed

    # ------------------------------------------------------------- autoscale
    def autoscale(self, policy: Policy | None) -> State:
        """Keep the replicas within `policy` from now on (replacing the autoscaler
        running, if any), or stop autoscaling (None: the replicas stay as they are).
        The autoscaler brings the replicas into a new range by itself, at once."""
        state = self.workdir.running()
        if policy is not None:
            _check_autoscalable(state.network is not None)
        self._stop_autoscaler()  # before the lock: it may need it to finish a scale
        with self.workdir.locked():
            state = self.workdir.running()
            state.autoscale, state.autoscaler = policy, None
            self.workdir.save(state)
            if policy is not None:
                self._start_autoscaler(state)
            return state

    def _start_autoscaler(self, state: State) -> None:
        """Start the autoscaler for `state.autoscale` and record it (under the lock)."""
        state.autoscaler = autoscaler.plan()
        self.workdir.save(state)  # its range, which it reads when it starts
        try:
            autoscaler.spawn(self.workdir, state.autoscaler, state)
        finally:
            self.workdir.save(state)  # its pid, even if it failed to start (down stops it)

    def _stop_autoscaler(self) -> None:
        """Stop the recorded autoscaler, if it runs; it finishes a scale it has begun."""
        state = self.workdir.load()
        if state is not None and state.autoscaler is not None and state.autoscaler.alive():
            procs.stop_process(state.autoscaler.pid, timeout=AUTOSCALER_STOP_TIMEOUT)

    # ---------------------------------------------------------------- status
    def status(self) -> dict:
        """What `status --json` prints (see status.py)."""
        return status.collect(self.workdir, self.workdir.running())


def _check_autoscalable(on_hosts: bool) -> None:
    """Autoscaling adds and removes replicas with `scale`, which keeps to loopback."""
    if on_hosts:
        raise ClusterError(
            "autoscaling is not available with --hosts: there every replica has a host "
            "(network namespace) of its own, made at `up`, and `scale` adds no hosts; "
            "run `up --hosts --replicas N` with the replicas you want"
        )
