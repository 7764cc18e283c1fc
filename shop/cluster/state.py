"""What runs where: a cluster's work directory and the state file inside it.

`Workdir` knows where every process keeps its files and reads, writes and locks
`state.json`, which records each process's pid together with its start time
and the boot it ran under, so a stale file never makes us signal a stranger.
`State` is what the file holds; `Proc` is one process in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import procs
from .netns import Network
from .procs import ClusterError
from .scalepolicy import Policy

STATE_VERSION = 1
DEFAULT_WORKDIR = ".cluster"
# Where the replicas keep sessions and carts, passed to them as SHOP_STATE
# (shop/config.py): the shared Redis, or (a demonstration, `up --state
# memory`) each replica's own memory, with nginx routing each client to one.
STATE_REDIS = "redis"
STATE_MEMORY = "memory"
APP_STATES = (STATE_REDIS, STATE_MEMORY)


@dataclass
class Proc:
    """One process of the cluster as recorded in the state file."""

    name: str
    port: int
    pid: int | None = None
    start_time: int | None = None
    # Where it listens: loopback, or in hosts mode (`up --hosts`) its host's
    # address, the process running inside that host's network namespace.
    address: str = procs.LOOPBACK
    netns: str | None = None

    @property
    def endpoint(self) -> str:
        """address:port, as a client (nginx, a Redis replica, a probe) dials it."""
        return f"{self.address}:{self.port}"

    def alive(self) -> bool:
        """Whether it still runs (a frozen process counts: it is there, it just does nothing)."""
        return procs.is_same_process(self.pid, self.start_time)

    def frozen(self) -> bool:
        """Whether it is alive but stopped by SIGSTOP (`shop-cluster freeze`)."""
        return self.alive() and procs.is_stopped(self.pid)

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
    # HA mode (`up --redis ha`): Redis nodes redis-1..N (which one is primary
    # is Sentinel's call, asked when needed) and Sentinels sentinel-1..3.
    redis_nodes: list[Proc] = field(default_factory=list)
    sentinels: list[Proc] = field(default_factory=list)
    # Hosts mode (`up --hosts`): the hosts and everything made for them, the
    # second load balancer's nginx (nginx-2 on lb-2; `nginx` is nginx-1 on
    # lb-1) and the keepalived of each load balancer.
    network: Network | None = None
    nginx_peers: list[Proc] = field(default_factory=list)
    keepalived: list[Proc] = field(default_factory=list)
    app_state: str = STATE_REDIS  # SHOP_STATE of every replica
    # Autoscaling (`up --autoscale`, `autoscale MIN:MAX`): its range and target,
    # and the autoscaler process (autoscaler.py); both None when it is off.
    autoscale: Policy | None = None
    autoscaler: Proc | None = None
    # The watchdog beside each nginx (watchdog.py), in the order of balancers();
    # none when started with --no-watchdog.
    watchdogs: list[Proc] = field(default_factory=list)
    # Every Redis node's and Sentinel's password: kept in its own file in the
    # workdir (Workdir.redis_password), never in state.json.
    redis_password: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        """Where clients reach the shop: nginx on loopback, or the virtual IP."""
        if self.network is None:
            return f"http://{procs.LOOPBACK}:{self.port}/"
        port = "" if self.port == 80 else f":{self.port}"
        return f"http://{self.network.vip}{port}/"

    @property
    def ha(self) -> bool:
        return bool(self.sentinels)

    def balancers(self) -> list[Proc]:
        """Every nginx: the one, or in hosts mode one per load-balancer host."""
        return [self.nginx, *self.nginx_peers]

    def listen(self, nginx: Proc) -> str:
        """What `nginx` listens on: its address, or in hosts mode every address of
        its host, since the virtual IP comes and goes with keepalived."""
        return f"*:{nginx.port}" if self.network else nginx.endpoint

    def stores(self) -> list[Proc]:
        """Every store process: the single Redis, or the HA nodes and Sentinels."""
        return [self.redis] if self.redis else [*self.redis_nodes, *self.sentinels]

    def processes(self) -> list[Proc]:
        """Every process, store first, then replicas, nginx, their watchdogs, keepalived,
        the autoscaler."""
        scaler = [self.autoscaler] if self.autoscaler else []
        return [
            *self.stores(), *self.replicas, *self.balancers(), *self.watchdogs,
            *self.keepalived, *scaler,
        ]  # fmt: skip

    def any_alive(self) -> bool:
        """Whether anything recorded still runs (on this boot)."""
        return any(p.alive() for p in self.processes())

    def find(self, name: str) -> Proc:
        for proc in self.processes():
            if proc.name == name:
                return proc
        names = ", ".join(p.name for p in self.processes())
        raise ClusterError(f"no process named {name!r} in this cluster (there are: {names})")

    def to_json(self) -> str:
        data = asdict(self)
        del data["redis_password"]
        return json.dumps({"url": self.url, **data}, indent=2)

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
            network=Network.from_dict(data["network"]) if data.get("network") else None,
            nginx_peers=[Proc(**r) for r in data.get("nginx_peers", [])],
            keepalived=[Proc(**r) for r in data.get("keepalived", [])],
            app_state=data.get("app_state", STATE_REDIS),
            autoscale=Policy.from_dict(data["autoscale"]) if data.get("autoscale") else None,
            autoscaler=Proc(**data["autoscaler"]) if data.get("autoscaler") else None,
            watchdogs=[Proc(**r) for r in data.get("watchdogs", [])],
        )


class Workdir:
    """One cluster's folder: configs, pid/state file, logs, Redis data, nginx temp files.

    Several clusters run side by side in different workdirs; nothing a cluster
    writes is outside its own.
    """

    def __init__(self, path: Path | str = DEFAULT_WORKDIR) -> None:
        self.path = Path(path).absolute()
        self.state_file = self.path / "state.json"
        self.log_dir = self.path / "logs"
        self.redis_dir = self.path / "redis"  # the single Redis
        self.secret_file = self.path / "secret_key"
        # The journal of what was done to the cluster and when (timeline.EventLog).
        self.events_file = self.path / "events.jsonl"
        self.redis_password_file = self.path / "redis_password"

    def __str__(self) -> str:
        return str(self.path)

    def proc_dir(self, proc: Proc) -> Path:
        """Where a process keeps its config, data and own files (an HA node, a
        Sentinel, nginx): a folder named after it."""
        return self.path / proc.name

    def log(self, proc: Proc) -> Path:
        """The log of a replica or nginx (stores log into their own folder)."""
        return self.log_dir / f"{proc.name}.log"

    def metrics_dir(self, proc: Proc) -> Path:
        """Where a replica's workers add up their Prometheus metrics."""
        return self.path / "metrics" / proc.name

    def load(self) -> State | None:
        """The recorded state, or None when there is none (or it is unreadable)."""
        try:
            state = State.from_json(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise ClusterError(f"cannot read {self.state_file}: {exc.strerror} (another user's?)")
        except (ValueError, KeyError, TypeError) as exc:
            raise ClusterError(
                f"cannot read {self.state_file} ({exc}); stop any leftover processes "
                f"yourself and remove that file"
            )
        if state.boot_id != procs.boot_id():
            # Recorded before a reboot: those pids now name strangers, never signal them.
            for proc in state.processes():
                proc.pid = proc.start_time = None
        if self.redis_password_file.exists():
            state.redis_password = self.redis_password()
        return state

    def save(self, state: State) -> None:
        # Write then rename: a reader never sees half a file.
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.state_file)

    def running(self) -> State:
        """The state of the running cluster; ClusterError if there is none."""
        state = self.load()
        if state is not None and not state.any_alive():
            raise ClusterError(
                f"the cluster in {self.path} is not running any more (stale state file, "
                f"e.g. after a reboot); `shop-cluster up --workdir {self.path}` starts it"
            )
        if state is None:
            raise ClusterError(f"no cluster is running in {self.path}")
        return state

    @contextlib.contextmanager
    def locked(self, *, create: bool = False) -> Iterator[None]:
        """Serialise commands that change the cluster (e.g. a `scale` and a `kill`).
        Only `up` creates the workdir; the others find nothing to do without one.

        Inside, every file made (configs, state, logs, Redis data, and what the
        processes started here make) is private to this user: umask 077. Other
        users of the machine must read neither the password nor the data.
        """
        previous = os.umask(procs.PRIVATE_UMASK)
        try:
            if create:
                self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            elif not self.path.is_dir():
                raise ClusterError(f"no cluster is running in {self.path}")
            with open(self.path / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                yield
        finally:
            os.umask(previous)

    def _secret(self, path: Path, make: Callable[[], str]) -> str:
        """A secret made once and kept in `path` (mode 0600), never committed."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as out:
            out.write(make())
        return path.read_text().strip()

    def secret_key(self) -> str:
        """The cluster's SECRET_KEY."""
        return self._secret(self.secret_file, lambda: secrets.token_urlsafe(48))

    def redis_password(self) -> str:
        """The password of the cluster's Redis nodes and Sentinels (hex: safe in a URL)."""
        return self._secret(self.redis_password_file, lambda: secrets.token_hex(24))
