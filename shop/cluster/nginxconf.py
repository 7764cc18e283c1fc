"""nginx, the load balancer: its configuration from the one template, its command
line, and (for the launcher) start and reload.

The template (`nginx.conf.j2`, beside this module so an installed launcher finds
it) is rendered three times: for the local launcher, with explicit loopback ports
and every file inside the workdir; for Docker Compose, where one server line
names the scaled `shop` service (nginx resolves it to every replica when it
loads the file, and nginx/follow-replicas.sh reloads nginx when that set
changes: no `resolve`, so Debian's nginx 1.22 runs it as the official image
does); and for Kubernetes, where nginx proxies to
the shop's ClusterIP Service. The Docker and Kubernetes renderings are committed
(`nginx/docker.conf`, `deploy/k8s/base/nginx.conf`); re-render them with
`python -m shop.cluster.nginxconf docker|kubernetes`.
`argv` is the one nginx command line of the project (launcher, tests, benchmark).

A running nginx of the launcher is described by a `Balancer`: its settings,
the replicas it balances over (by name) and which of them are out of
rotation. The launcher builds one per nginx from its state; the watchdog beside
that nginx (watchdog.py) reads it from the JSON file the launcher saves beside
the config (`spec_file`), its only input, so it runs wherever that nginx runs
(in hosts mode, in its load balancer's network namespace). Both change the
config only through `configure` (the launcher: replicas added or removed) and
`take_out` (the watchdog: its verdict), under one lock, so neither undoes what
the other did.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2

from . import procs
from .procs import ClusterError
from .state import STATE_MEMORY, Proc, State, Workdir

TEMPLATE_DIR = Path(__file__).resolve().parent
TEMPLATE_NAME = "nginx.conf.j2"
# The shop's static files, served by nginx itself (shop/cluster/../static).
STATIC_ROOT = TEMPLATE_DIR.parent / "static"
HEALTH_PATH = "/nginx-health"
# nginx's stub_status, reachable from loopback only.
STATUS_PATH = "/nginx-status"

# Docker Compose: the service name, the port gunicorn binds in the image, and
# where docker-compose.yml mounts the static files into the nginx container.
DOCKER_SHOP_SERVICE = "shop:8000"
DOCKER_STATIC_ROOT = "/srv/shop/static"
DOCKER_LISTEN = "8080"
# How long old nginx workers may take to finish their requests after a reload:
# the shop answers in milliseconds, and a request on a hung replica ends within
# nginx's own bounds (at most 2 x 6 s for a login, see the template).
DRAIN_TIMEOUT = 15.0
# Beside each launcher's nginx.conf: the balancer's spec and its watchdog's status.
SPEC_NAME = "balancer.json"
WATCHDOG_STATUS_NAME = "watchdog.json"

# Kubernetes (deploy/k8s/base): the shop's ClusterIP Service, a fixed address
# that kube-proxy spreads over the ready pods (so nginx resolves it once, at
# start, and still follows scaling), and the folders the nginx pod mounts:
# emptyDirs for the pid file and temp files (read-only root filesystem), the
# static files copied from the shop image by an init container.
K8S_SHOP_SERVICE = "shop:8000"
K8S_STATIC_ROOT = "/srv/shop/static"
K8S_LISTEN = "8080"
K8S_PREFIX = "/run/nginx"


@dataclass(frozen=True)
class NginxSettings:
    """Everything the template varies on; the field names are the template's variables."""

    target: str
    standalone: bool
    listen: str
    servers: Sequence[str]
    static_root: str
    access_log: str | None  # None: no access log
    # The one server is a Kubernetes Service (many pods behind one address).
    upstream_is_service: bool = False
    # How many replicas one request may try (0: each once); the Service
    # upstream lists its one address this many times.
    next_upstream_tries: int = 3
    # Hash each client to one replica by a routing cookie: only for replicas
    # that keep state in their memory (SHOP_STATE=memory, a demonstration).
    sticky: bool = False
    health_path: str = HEALTH_PATH
    status_path: str = STATUS_PATH
    status_allow: Sequence[str] = ()  # beside 127.0.0.1, who may read status_path
    prefix: str = ""
    error_log: str = ""
    run_as_user: str | None = None
    worker_processes: int = 2
    # Servers out of rotation (the watchdog's verdict): rendered as `backup`, so
    # nginx tries them only when every replica in rotation fails (with sticky,
    # whose hash balancing takes no backup servers, as `down`).
    down: Sequence[str] = ()


def template_environment() -> jinja2.Environment:
    """Jinja for the launcher's config templates (nginx's, keepalived's), all beside this module."""
    # An nginx config is not HTML: autoescaping would corrupt quotes and '&'.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=False,  # noqa: S701
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


# The methods each JSON API path takes, as the app's routes have them, HEAD
# and OPTIONS included (Flask adds them): nginx names them in the Allow header
# of a 405 it answers itself (to a TRACE). tests/test_nginx_config.py checks
# this table against the app's url_map; the launcher never imports the app.
API_METHODS = (
    ("/api/register", "OPTIONS, POST"),
    ("/api/login", "OPTIONS, POST"),
    ("/api/logout", "OPTIONS, POST"),
    ("/api/me", "GET, HEAD, OPTIONS"),
    ("/api/products", "GET, HEAD, OPTIONS"),
    ("/api/cart", "GET, HEAD, OPTIONS"),
    ("/api/cart/items", "OPTIONS, POST"),
    ("~^/api/cart/items/[^/]+$", "DELETE, OPTIONS, PUT"),
    ("/api/checkout", "OPTIONS, POST"),
    ("/api/orders", "GET, HEAD, OPTIONS"),
    ("/api/cluster", "GET, HEAD, OPTIONS"),
    ("/api/openapi.json", "GET, HEAD, OPTIONS"),
)


def render(settings: NginxSettings) -> str:
    """The configuration text for `settings`."""
    template = template_environment().get_template(TEMPLATE_NAME)
    return template.render(**asdict(settings), api_methods=API_METHODS)


def local_settings(
    *,
    prefix: Path,
    listen: str,
    servers: Sequence[str],
    log_dir: Path,
    name: str = "nginx",
    status_allow: Sequence[str] = (),
    sticky: bool = False,
) -> NginxSettings:
    """Settings for a non-root nginx on `listen` (address:port) in front of
    `servers` (address:port each), whose files all stay under `prefix` and whose
    logs are `log_dir`/NAME-access.log and NAME-error.log. `status_allow`: the
    addresses beside loopback that may read its counters. `sticky`: each client
    to one replica (for replicas with state in memory)."""
    if not servers:
        raise ValueError("nginx needs at least one replica")
    return NginxSettings(
        target="local",
        standalone=True,
        listen=listen,
        servers=list(servers),
        static_root=str(STATIC_ROOT),
        access_log=str(log_dir / f"{name}-access.log"),
        prefix=str(prefix),
        error_log=str(error_log(log_dir, name)),
        status_allow=tuple(status_allow),
        sticky=sticky,
        # Only meaningful when the master runs as root: keep the workers as
        # the same user, who owns the workdir.
        run_as_user=pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None,
    )


def docker_settings() -> NginxSettings:
    """Settings for the official nginx image in docker-compose.yml (an http-context include)."""
    return NginxSettings(
        target="docker",
        standalone=False,
        listen=DOCKER_LISTEN,
        servers=[DOCKER_SHOP_SERVICE],
        static_root=DOCKER_STATIC_ROOT,
        access_log="/dev/stdout",
        next_upstream_tries=0,
    )


def kubernetes_settings() -> NginxSettings:
    """Settings for the nginx pods of deploy/k8s: a whole nginx.conf, non-root, logs to stdio."""
    return NginxSettings(
        target="kubernetes",
        standalone=True,
        listen=K8S_LISTEN,
        servers=[K8S_SHOP_SERVICE],
        static_root=K8S_STATIC_ROOT,
        access_log="/dev/stdout",
        prefix=K8S_PREFIX,
        error_log="stderr",
        upstream_is_service=True,
    )


def render_local(**settings: Any) -> str:
    """The launcher's nginx.conf (`settings`: those of `local_settings`)."""
    return render(local_settings(**settings))


def error_log(log_dir: Path, name: str = "nginx") -> Path:
    """Where the nginx called `name` logs its errors (and its start-up failures)."""
    return log_dir / f"{name}-error.log"


def render_docker() -> str:
    """The text committed as nginx/docker.conf."""
    return render(docker_settings())


def render_kubernetes() -> str:
    """The text committed as deploy/k8s/base/nginx.conf."""
    return render(kubernetes_settings())


# The committed renderings, by the name `python -m shop.cluster.nginxconf` takes.
COMMITTED = {
    "docker": (render_docker, "nginx/docker.conf"),
    "kubernetes": (render_kubernetes, "deploy/k8s/base/nginx.conf"),
}


@dataclass
class Balancer:
    """One nginx: how to render, check and reload it, and over which replicas.

    `replicas` maps each replica's name to the address nginx (and its watchdog)
    reach it at, in upstream order; `out` names those out of rotation. Files:
    the config `conf`, and in `prefix` the pid file nginx writes, this spec as
    JSON and the watchdog's status. `events` is the cluster's journal, where
    the watchdog notes what it decided (timeline.EventLog); None: nowhere.
    """

    settings: NginxSettings
    replicas: dict[str, str]
    prefix: Path
    conf: Path
    error_log: Path
    events: Path | None = None
    out: list[str] = field(default_factory=list)

    @property
    def spec_file(self) -> Path:
        return self.prefix / SPEC_NAME

    @property
    def pid_file(self) -> Path:
        return self.prefix / "nginx.pid"  # as the template's `pid` directive says

    @property
    def watchdog_file(self) -> Path:
        """Where this nginx's watchdog keeps its status (probes, decisions)."""
        return self.prefix / WATCHDOG_STATUS_NAME

    def rendered(self) -> str:
        """The config: the settings with these replicas, those out as backup servers."""
        return render(
            replace(
                self.settings,
                servers=list(self.replicas.values()),
                down=[self.replicas[name] for name in self.out if name in self.replicas],
            )
        )

    def argv(self, conf: Path | None = None) -> list[str]:
        return argv(prefix=self.prefix, conf=conf or self.conf, error_log=self.error_log)

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("prefix", "conf", "error_log", "events"):
            data[key] = str(data[key]) if data[key] is not None else None
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Balancer:
        data = json.loads(text)
        return cls(
            settings=NginxSettings(**data["settings"]),
            replicas=dict(data["replicas"]),
            prefix=Path(data["prefix"]),
            conf=Path(data["conf"]),
            error_log=Path(data["error_log"]),
            events=Path(data["events"]) if data.get("events") else None,
            out=list(data.get("out", [])),
        )

    @classmethod
    def load(cls, spec_file: Path) -> Balancer:
        return cls.from_json(Path(spec_file).read_text())


@contextlib.contextmanager
def _locked(prefix: Path) -> Iterator[None]:
    """One writer of a balancer's spec and config at a time (launcher or watchdog)."""
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / "balancer.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def configure(balancer: Balancer) -> Balancer:
    """Save `balancer` and render its config, keeping out of rotation whatever the
    watchdog took out (among the replicas still there). For the launcher: before
    nginx starts, and when replicas come or go."""
    with _locked(balancer.prefix):
        if balancer.spec_file.exists():
            previous = Balancer.load(balancer.spec_file)
            balancer.out = [name for name in previous.out if name in balancer.replicas]
        _write(balancer)
    return balancer


def take_out(spec_file: Path, out: Collection[str]) -> Balancer:
    """Render the config of the balancer saved in `spec_file` with exactly `out`
    out of rotation (the watchdog's verdict); return it. The caller reloads nginx."""
    with _locked(Path(spec_file).parent):
        balancer = Balancer.load(spec_file)
        balancer.out = [name for name in balancer.replicas if name in out]
        _write(balancer)
    return balancer


def _write(balancer: Balancer) -> None:
    """Save the spec, then replace the config, but only if `nginx -t` accepts it."""
    (balancer.prefix / "tmp").mkdir(parents=True, exist_ok=True)
    spec = balancer.spec_file.with_suffix(".tmp")
    spec.write_text(balancer.to_json())
    tmp = balancer.conf.with_suffix(".new")
    tmp.write_text(balancer.rendered())
    check = subprocess.run(
        [*balancer.argv(tmp), "-t", "-q"], capture_output=True, text=True, timeout=30
    )
    if check.returncode != 0:
        raise ClusterError(f"nginx rejected the rendered config {tmp}: {check.stderr.strip()}")
    tmp.replace(balancer.conf)
    spec.replace(balancer.spec_file)  # write then rename: a reader never sees half a file


def master_pid(balancer: Balancer) -> int | None:
    """The pid of this balancer's nginx master, from its pid file, or None.

    The pid is trusted only if that process is an nginx started with this very
    config, so a stale pid file (nginx was killed, the pid reused) never makes
    us signal a stranger.
    """
    try:
        pid = int(balancer.pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    ours = b"nginx" in cmdline and str(balancer.conf).encode() in cmdline
    return pid if ours and procs.pid_alive(pid) else None


def argv(*, prefix: Path, conf: Path, error_log: Path) -> list[str]:
    """The nginx command line for a non-root nginx whose files stay under `prefix`.

    `-e`: the error log before the config is read (the compiled-in default is
    under /var/log, not writable without root).
    """
    return [
        procs.find_binary("nginx"),
        "-p", str(prefix),
        "-e", str(error_log),
        "-c", str(conf),
    ]  # fmt: skip


# ------------------------------------------------------- the launcher's nginx
def url(nginx: Proc, path: str = "/") -> str:
    """A URL of one of the cluster's nginx, at its own address."""
    return f"http://{nginx.endpoint}{path}"


def conf_path(workdir: Workdir, nginx: Proc) -> Path:
    return workdir.proc_dir(nginx) / "nginx.conf"


def balancer(workdir: Workdir, state: State, nginx: Proc) -> Balancer:
    """The launcher's `nginx` over `state`'s replicas (none out yet: `configure`
    keeps what the watchdog decided)."""
    prefix = workdir.proc_dir(nginx)
    return Balancer(
        settings=local_settings(
            prefix=prefix,
            listen=state.listen(nginx),
            servers=[r.endpoint for r in state.replicas],
            log_dir=workdir.log_dir,
            name=nginx.name,
            # On hosts the launcher's probes come from the client's address.
            status_allow=[state.network.client_address] if state.network else [],
            sticky=state.app_state == STATE_MEMORY,
        ),
        replicas={r.name: r.endpoint for r in state.replicas},
        prefix=prefix,
        conf=conf_path(workdir, nginx),
        error_log=error_log(workdir.log_dir, nginx.name),
        events=workdir.events_file,
    )


def saved(workdir: Workdir, nginx: Proc) -> Balancer | None:
    """The launcher's `nginx` as last saved (with what the watchdog took out), or None."""
    try:
        return Balancer.load(workdir.proc_dir(nginx) / SPEC_NAME)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def forget(workdir: Workdir, state: State) -> None:
    """A new cluster starts with every replica in rotation: drop an earlier one's
    balancer specs and watchdog statuses."""
    for nginx in state.balancers():
        for name in (SPEC_NAME, WATCHDOG_STATUS_NAME):
            (workdir.proc_dir(nginx) / name).unlink(missing_ok=True)


def write_conf(workdir: Workdir, state: State, nginx: Proc) -> Balancer:
    """Render the config for `state`'s replicas; replace the old one only if `nginx -t` agrees."""
    return configure(balancer(workdir, state, nginx))


def start(workdir: Workdir, state: State, nginx: Proc) -> None:
    """Start `nginx` (one of `state.balancers()`); return once it answers its health check."""
    if procs.port_is_open(nginx.port, nginx.address):
        raise ClusterError(
            f"port {nginx.port} is already in use on {nginx.address}; choose another with --port"
        )
    popen = procs.spawn(
        write_conf(workdir, state, nginx).argv(), log_path=workdir.log(nginx), netns=nginx.netns
    )
    nginx.record(popen)
    log = error_log(workdir.log_dir, nginx.name)

    def ready() -> bool:
        if not procs.pid_alive(popen.pid):
            raise ClusterError(f"{nginx.name} exited at start; see {log}:\n{procs.tail(log)}")
        return procs.http_ok(url(nginx, HEALTH_PATH))

    procs.wait_for(ready, f"{nginx.name} on {nginx.endpoint} (log: {log})")


def reload_all(workdir: Workdir, state: State) -> None:
    """`reload` every load balancer of the cluster (hosts mode has two)."""
    for nginx in state.balancers():
        reload(workdir, state, nginx)


def reload(workdir: Workdir, state: State, nginx: Proc) -> None:
    """Re-render the config and reload `nginx`; return once no old worker is left."""
    write_conf(workdir, state, nginx)
    if not nginx.alive():
        return  # it reads the new config when started
    master = nginx.pid
    old_workers = procs.child_pids(master)
    os.kill(master, signal.SIGHUP)
    # The master starts new workers and old ones finish their requests and
    # exit: only then has no request any path left to a removed replica.
    procs.wait_for(
        lambda: not (procs.child_pids(master) & old_workers) and bool(procs.child_pids(master)),
        "nginx to reload (old workers to finish)",
        timeout=DRAIN_TIMEOUT,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m shop.cluster.nginxconf docker|kubernetes` prints that rendering."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in COMMITTED:
        for name, (_, path) in COMMITTED.items():
            print(f"usage: python -m shop.cluster.nginxconf {name} > {path}", file=sys.stderr)
        return 2
    sys.stdout.write(COMMITTED[args[0]][0]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
