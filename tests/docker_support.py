"""A private Docker engine for the docker tests, and the local images they run.

No image registry is reachable from the machines this project is tested on,
so the official images the compose file names by default cannot be pulled.
The tests substitute images made from what is reachable, through the compose
file's own variables (NGINX_IMAGE, REDIS_IMAGE and the PYTHON_IMAGE build arg):

* `shop-local/debian:KEY`: a Debian root filesystem made by debootstrap from
  the mirror apt already uses (python3-venv, nginx, redis-server), imported
  with `docker import`, adjusted to the official images' conventions (nginx
  logs to stdout/stderr and no default site, a /data folder for Redis);
* `shop-local/python:KEY`: that plus a folder of wheels of the project's
  dependencies (downloaded from PyPI by that image's own pip), and pip settings
  (PIP_NO_INDEX, PIP_FIND_LINKS) that make the Dockerfile's `pip install .`
  use them: the Dockerfile itself does not know the difference.

The root filesystem and the wheels are cached between runs in
~/.cache/shop-cluster/docker (SHOP_DOCKER_CACHE), keyed by everything that
goes into them, so only a first run pays for debootstrap.

The engine (`PrivateDocker`) is a dockerd of our own: data root, exec root,
socket and pid file in a temporary folder, its own bridge, addresses only from
198.19.0.0/16 (a /20 block no route on this machine uses yet), no iptables
rules (so no NAT towards the outside), published ports on 127.0.0.1 by default.
Names Docker's DNS does not know are forwarded to a server on that bridge
that answers NXDOMAIN at once (`NoSuchName`), as a reachable resolver would.
`stop()` ends it by pid and removes every bridge and mount it left.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import failure_report

from shop.cluster import procs

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(
    os.environ.get("SHOP_DOCKER_CACHE") or Path.home() / ".cache" / "shop-cluster" / "docker"
)

SUITE = "bookworm"  # Debian 12: Python 3.11, nginx 1.22, Redis 7.0
PACKAGES = ("python3-venv", "nginx", "redis-server")
# Bump when _adjust_rootfs or the python image's Dockerfile changes: part of the cache key.
RECIPE = "3"

# Every address the engine uses comes from here: benchmarking space (RFC 2544),
# never a LAN's. Each engine takes one free /20 of it: the first /24 for its
# default bridge (docker build), the fifth to eighth for compose networks (one
# per project), the second half for its address pools.
ADDRESS_SPACE = ipaddress.ip_network("198.19.0.0/16")
BLOCK_PREFIX = 20

# What .env adds for the ha profile (the comment at the top of docker-compose.yml).
HA_PROFILE_ENV = {
    "REDIS_SCHEME": "redis+sentinel",
    "REDIS_HOSTS": "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379",
    "REDIS_TARGET": "shop/0",
    "SHOP_REPLICA_ACKS": "1",
    "SESSION_REPLICA_ACKS": "1",
    "REDIS_MIN_REPLICAS_TO_WRITE": "1",  # the nodes' write guard (docker-compose.yml)
}

# The ha profile's Redis nodes and Sentinels (docker-compose.yml).
HA_NODES = ("redis", "redis-2", "redis-3")
HA_SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")

# Bounds, each with its reason.
DEBOOTSTRAP_TIMEOUT = 900  # about a minute here; a slow mirror gets much longer
DAEMON_START_TIMEOUT = 60  # dockerd answers within seconds; containerd starts first
DAEMON_STOP_TIMEOUT = 60  # dockerd stops running containers first (their grace periods)
CLI_TIMEOUT = 300  # the slowest docker command here is an image build or import
# The shop's healthcheck runs every 10 s after a 20 s start period (Dockerfile):
# a new container is healthy after one or two intervals; slack for a busy machine.
HEALTHY_TIMEOUT = 90


class DockerUnavailable(RuntimeError):
    """Docker cannot run on this machine (the reason is the message)."""


def why_docker_cannot_run() -> str | None:
    """The reason the docker tests must be skipped here, or None when they can run."""
    if os.geteuid() != 0:
        return "a private dockerd needs root (run the docker tests as root)"
    missing = [
        f"{binary} ({package})"
        for binary, package in [
            ("dockerd", "docker.io"),
            ("docker", "docker.io"),
            ("docker-compose", "docker-compose"),
            ("debootstrap", "debootstrap"),
            ("ip", "iproute2"),
        ]
        if _which(binary) is None
    ]
    if missing:
        return "missing: " + ", ".join(missing) + " (./run.sh test installs them)"
    filesystems = Path("/proc/filesystems").read_text()
    if "overlay" not in filesystems:
        return "the kernel has no overlay filesystem (needed by dockerd's overlay2 driver)"
    if not Path("/sys/fs/cgroup").is_dir() or not any(Path("/sys/fs/cgroup").iterdir()):
        return "no cgroup filesystem is mounted at /sys/fs/cgroup"
    return None


def _which(binary: str) -> str | None:
    return shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _run(argv: Sequence[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with its output, which is what a reader needs."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-3000:]}"
        )
    return result


# ------------------------------------------------------------------ addresses
def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network a route or an interface address on this machine covers."""
    out = _run([_which("ip") or "ip", "-4", "-j", "route", "show", "table", "all"], timeout=10)
    networks = []
    for route in json.loads(out.stdout or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                networks.append(ipaddress.ip_network(dst, strict=False))
    return networks


def free_block() -> ipaddress.IPv4Network:
    """A /20 of ADDRESS_SPACE that no route on this machine overlaps (the first is
    never used). The search starts at a place given by our pid, so two test
    sessions starting together rarely pick the same block before either has
    made its bridge."""
    used = _used_networks()
    blocks = list(ADDRESS_SPACE.subnets(new_prefix=BLOCK_PREFIX))[1:]
    start = os.getpid() % len(blocks)
    for block in blocks[start:] + blocks[:start]:
        if not any(block.overlaps(net) for net in used):
            return block
    raise DockerUnavailable(f"no free /{BLOCK_PREFIX} left in {ADDRESS_SPACE}")


@dataclass(frozen=True)
class AddressPlan:
    """How one engine uses its /20 block."""

    block: ipaddress.IPv4Network

    def _subnet(self, third_octet_offset: int, prefix: int) -> ipaddress.IPv4Network:
        base = int(self.block.network_address) + third_octet_offset * 256
        return ipaddress.ip_network(f"{ipaddress.IPv4Address(base)}/{prefix}")

    @property
    def bridge(self) -> ipaddress.IPv4Interface:  # the default bridge (docker build's RUN)
        net = self._subnet(0, 24)
        return ipaddress.ip_interface(f"{net.network_address + 1}/24")

    def compose_subnet(self, index: int) -> ipaddress.IPv4Network:  # SHOP_SUBNET of project `index`
        return self._subnet(4 + index, 24)

    @property
    def pool(self) -> ipaddress.IPv4Network:  # --default-address-pool
        return self._subnet(8, 21)


# ------------------------------------------------------------------ local images
def _apt_mirror() -> str:
    """The Debian mirror apt on this machine already uses (for SUITE's main archive)."""
    sources = Path("/etc/apt/sources.list.d")
    texts = [p.read_text() for p in sorted(sources.glob("*.sources"))] if sources.is_dir() else []
    for text in texts:
        for stanza in text.split("\n\n"):
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in stanza.splitlines())
                if not k.startswith("#") and v
            )
            suites = fields.get("suites", "").split()
            if SUITE in suites and "main" in fields.get("components", "").split():
                return fields["uris"].split()[0]
    one_line = Path("/etc/apt/sources.list")
    if one_line.exists():
        for line in one_line.read_text().splitlines():
            match = re.match(rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{SUITE}\s+.*\bmain\b", line)
            if match:
                return match.group(1)
    raise DockerUnavailable(f"no Debian {SUITE} main archive in apt's sources to debootstrap from")


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _wheel_requirements() -> list[str]:
    """What `pip install .` of the project needs: its build backend and its dependencies."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return sorted(pyproject["build-system"]["requires"] + pyproject["project"]["dependencies"])


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """One builder at a time per cache (two test runs may start together)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _adjust_rootfs(root: Path) -> None:
    """Make the Debian tree behave like the official images where the compose file cares."""
    for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (root / leftovers).glob("*"):
            if path.is_file():
                path.unlink()
    # nginx: no default site on port 80, and logs to the container's output.
    (root / "etc/nginx/sites-enabled/default").unlink(missing_ok=True)
    for name, target in [("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")]:
        log = root / "var/log/nginx" / name
        log.unlink(missing_ok=True)
        log.symlink_to(target)
    # Redis: the official image's data folder.
    (root / "data").mkdir(exist_ok=True)


def debian_rootfs_tar(log: Path) -> tuple[Path, str, float]:
    """The cached root filesystem tarball (built now if missing): (path, key, seconds spent)."""
    mirror = _apt_mirror()
    key = _key(SUITE, PACKAGES, mirror, RECIPE)
    tar = CACHE_DIR / f"debian-{SUITE}-{key}.tar"
    with _cache_lock():
        if tar.exists():
            return tar, key, 0.0
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="rootfs-") as scratch:
            root = Path(scratch) / "root"
            with open(log, "w") as out:
                subprocess.run(
                    [
                        _which("debootstrap") or "debootstrap",
                        "--variant=minbase",
                        f"--include={','.join(PACKAGES)}",
                        SUITE,
                        str(root),
                        mirror,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=DEBOOTSTRAP_TIMEOUT,
                    check=True,
                )
            _adjust_rootfs(root)
            partial = tar.with_suffix(".partial")
            _run(["tar", "-C", str(root), "-cf", str(partial), "."], timeout=CLI_TIMEOUT)
            partial.rename(tar)
        return tar, key, time.monotonic() - started


def _host_pip_settings() -> list[str]:
    """`docker run` options that give a container the host's way to PyPI: its
    resolver (the engine's --dns answers every name NXDOMAIN), its index and the
    CA bundle the host trusts (a TLS-inspecting proxy's CA may be in it)."""
    options = ["--volume", "/etc/resolv.conf:/etc/resolv.conf:ro"]
    bundle = next(
        (
            Path(value)
            for value in (
                os.environ.get("PIP_CERT"),
                os.environ.get("REQUESTS_CA_BUNDLE"),
                os.environ.get("SSL_CERT_FILE"),
                "/etc/ssl/certs/ca-certificates.crt",
            )
            if value and Path(value).is_file()
        ),
        None,
    )
    if bundle:
        options += ["--volume", f"{bundle}:/etc/host-ca.crt:ro"]
        options += ["--env", "PIP_CERT=/etc/host-ca.crt"]
    index = os.environ.get("PIP_INDEX_URL", "")
    if index.startswith(("http://", "https://")):
        options += ["--env", f"PIP_INDEX_URL={index}"]
    return options


class NoSuchName:
    """A DNS server that answers every query "no such name" (NXDOMAIN), in a thread.

    Docker's DNS answers for the compose services itself and forwards other
    names (a killed container's, which it no longer knows) to the daemon's
    --dns servers. The machine's own resolver cannot be reached from a
    container here (no NAT, on purpose), and Docker 20.10 then sends no answer
    at all: every such lookup hangs for glibc's 2 x 2 x 5 s. Sentinel resolves
    a dead primary's name in its event loop, so it would stall into its tilt
    mode and never fail over. With a reachable resolver (any machine with a
    network) the answer is a quick NXDOMAIN: this server gives that answer, on
    the engine's own bridge, so no query leaves the machine.
    """

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 53))
        self.sock.settimeout(0.5)  # how long close() may wait for the thread
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(query: bytes) -> bytes | None:
        """The NXDOMAIN reply to `query` (same id and question), or None if malformed."""
        end = 12
        while end < len(query) and query[end] != 0:
            end += query[end] + 1
        end += 5  # the root label, then QTYPE and QCLASS
        if len(query) < end:
            return None
        # QR=1, the query's opcode and RD kept; RA=1, RCODE=3 (name error).
        flags = bytes([0x80 | (query[2] & 0x79), 0x83])
        counts = query[4:6] + bytes(6)  # one question, no records
        return query[:2] + flags + counts + query[12:end]

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                query, peer = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            reply = self.answer(query)
            if reply:
                with contextlib.suppress(OSError):
                    self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.closing.set()
        self.thread.join(timeout=5)
        self.sock.close()


# ------------------------------------------------------------------ the engine
@dataclass
class PrivateDocker:
    """A dockerd of our own; `start()`, then `cli(...)`, `env`, finally `stop()`."""

    root: Path
    plan: AddressPlan
    bridge_name: str
    pid: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # compose variables, by local_images()
    resolver: NoSuchName | None = None

    @classmethod
    def create(cls) -> PrivateDocker:
        reason = why_docker_cannot_run()
        if reason:
            raise DockerUnavailable(reason)
        root = Path(tempfile.mkdtemp(prefix="shopdk-", dir="/tmp"))  # short: socket paths
        return cls(
            root=root, plan=AddressPlan(free_block()), bridge_name=f"shopdk{os.getpid() % 10**8}"
        )

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def env(self) -> dict[str, str]:
        """The environment in which docker and docker-compose talk to this engine only."""
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.root / "cli"),
        }

    def start(self) -> None:
        ip = _which("ip") or "ip"
        _run([ip, "link", "add", self.bridge_name, "type", "bridge"], timeout=10)
        _run([ip, "addr", "add", str(self.plan.bridge), "dev", self.bridge_name], timeout=10)
        _run([ip, "link", "set", self.bridge_name, "up"], timeout=10)
        self.resolver = NoSuchName(str(self.plan.bridge.ip))
        argv = [
            _which("dockerd") or "dockerd",
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"),
            "--host", f"unix://{self.socket}",
            "--containerd-namespace", self.bridge_name,
            "--containerd-plugins-namespace", f"{self.bridge_name}-plugins",
            # Our bridge, not docker0 (another engine may own that name).
            "--bridge", self.bridge_name,
            "--default-address-pool", f"base={self.plan.pool},size=24",
            # No iptables rules: no NAT to the outside, nothing changed on the
            # host; published ports go through docker-proxy, on loopback.
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--ip", "127.0.0.1",
            # Docker's DNS forwards the names it does not know to these
            # servers: NoSuchName's, on our bridge (see its docstring).
            "--dns", str(self.plan.bridge.ip),
        ]  # fmt: skip
        with open(self.log, "w") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = proc.pid
        try:
            procs.wait_until(
                lambda: proc.poll() is not None or self._answers(),
                timeout=DAEMON_START_TIMEOUT,
                what=f"dockerd to answer (log: {self.log})",
            )
        except Exception:
            raise RuntimeError(f"dockerd did not start:\n{self.log_tail()}") from None
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited {proc.returncode}:\n{self.log_tail()}")

    def _answers(self) -> bool:
        return self.cli("version", check=False, timeout=10).returncode == 0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cli(
        self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT, **kwargs
    ) -> subprocess.CompletedProcess:
        """`docker ARGS` against this engine."""
        argv = [_which("docker") or "docker", *args]
        if check:
            return _run(argv, timeout=timeout, env=self.env, **kwargs)
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=self.env, **kwargs
        )

    # ---------------------------------------------------------------- images
    def local_images(self) -> dict[str, str]:
        """Import and build the local images (from the cache); the compose variables naming them."""
        started = time.monotonic()
        tar, debian_key, self.timings["debootstrap"] = debian_rootfs_tar(
            self.root / "debootstrap.log"
        )
        debian = f"shop-local/debian:{debian_key}"
        self.cli("import", str(tar), debian)
        wheels, wheels_key, self.timings["wheels"] = self.wheelhouse(debian, debian_key)
        python = f"shop-local/python:{wheels_key}"
        context = self.root / "python-image"
        shutil.copytree(wheels, context / "wheels")
        (context / "Dockerfile").write_text(
            f"FROM {debian}\n"
            "COPY wheels/ /wheels/\n"
            "# The Dockerfile's `pip install .` then installs from these wheels only.\n"
            "ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels\n"
        )
        self.cli("build", "--quiet", "--network", "none", "--tag", python, str(context))
        shutil.rmtree(context)
        self.timings["local images"] = time.monotonic() - started
        self.images = {"NGINX_IMAGE": debian, "REDIS_IMAGE": debian, "PYTHON_IMAGE": python}
        return self.images

    def wheelhouse(self, debian: str, debian_key: str) -> tuple[Path, str, float]:
        """The cached folder of wheels for the project's dependencies: (path, key, seconds).

        Downloaded by the image's own Python (in a container on the host's
        network, from PyPI): environment markers are evaluated for it, and
        they differ between Pythons (Debian's 3.11.2 needs async-timeout for
        redis, a 3.11.7 does not)."""
        requirements = _wheel_requirements()
        key = _key(debian_key, requirements, RECIPE)
        wheels = CACHE_DIR / f"wheels-{key}"
        with _cache_lock():
            if wheels.is_dir():
                return wheels, key, 0.0
            started = time.monotonic()
            partial = CACHE_DIR / f"wheels-{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            script = (
                "python3 -m venv /tmp/pip && /tmp/pip/bin/pip download --quiet"
                ' --disable-pip-version-check --only-binary=:all: --dest /wheels "$@"'
            )
            self.cli(
                "run", "--rm", "--network", "host", "--volume", f"{partial}:/wheels",
                *_host_pip_settings(), debian, "sh", "-c", script, "sh", *requirements,
            )  # fmt: skip
            partial.rename(wheels)
            return wheels, key, time.monotonic() - started

    # ---------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop dockerd by pid (it stops its containers and containerd), then remove
        what it may have left: processes, mounts, bridges in our address block."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                procs.wait_until(
                    lambda: not procs.pid_alive(self.pid),
                    timeout=DAEMON_STOP_TIMEOUT,
                    what="dockerd to stop",
                )
            except Exception:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        for pid in self._leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._unmount_leftovers()
        if self.resolver is not None:
            self.resolver.close()
        self._delete_bridges()
        shutil.rmtree(self.root, ignore_errors=True)

    def _leftover_pids(self) -> list[int]:
        """Processes (containerd, shims) whose command line names our folders."""
        marker = str(self.root).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if marker in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
        return found

    def _unmount_leftovers(self) -> None:
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.root))
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=10)

    def bridges(self) -> list[str]:
        """Bridges on this machine with an address in our block (ours, or left by us)."""
        out = _run([_which("ip") or "ip", "-4", "-j", "addr", "show", "type", "bridge"], timeout=10)
        names = []
        for link in json.loads(out.stdout or "[]"):
            for addr in link.get("addr_info", []):
                if ipaddress.ip_address(addr["local"]) in self.plan.block:
                    names.append(link["ifname"])
        return sorted(set(names))

    def _delete_bridges(self) -> None:
        names = set(self.bridges()) | {self.bridge_name}
        for name in names:
            subprocess.run(
                [_which("ip") or "ip", "link", "del", name], capture_output=True, timeout=10
            )


# ------------------------------------------------------------------ compose
@dataclass
class Compose:
    """`docker-compose` on the repository's compose file, as one project on one engine."""

    engine: PrivateDocker
    project: str
    variables: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        return {**self.engine.env, "COMPOSE_PROJECT_NAME": self.project, **self.variables}

    def run(
        self, *args: str, timeout: float = CLI_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess:
        argv = [_which("docker-compose") or "docker-compose", "--ansi", "never", *args]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=self.env, cwd=REPO
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker-compose {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    @property
    def url(self) -> str:
        return f"http://{procs.LOOPBACK}:{self.variables['SHOP_PORT']}"

    def down(self) -> subprocess.CompletedProcess:
        """Everything of the project, in every profile, volumes included."""
        return self.run(
            "--profile", "ha", "--profile", "observability",
            "down", "--volumes", "--remove-orphans", "--timeout", "45", check=False,
        )  # fmt: skip

    def containers(self, service: str | None = None, *, all_states: bool = False) -> list[dict]:
        """`docker inspect` of the project's containers (of one service, if given)."""
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = self.engine.cli("ps", "-q", *(["-a"] if all_states else []), *filters).stdout.split()
        if not ids:
            return []
        return json.loads(self.engine.cli("inspect", *ids).stdout)

    def health(self, service: str) -> dict[str, str]:
        """{container hostname: health status} of a service's running containers."""
        return {
            c["Config"]["Hostname"]: (c["State"].get("Health") or {}).get("Status", "none")
            for c in self.containers(service)
        }

    def wait_healthy(self, expected: dict[str, int], timeout: float = HEALTHY_TIMEOUT) -> None:
        """Until each service in `expected` runs exactly that many containers, all healthy."""

        def healthy() -> bool:
            for service, count in expected.items():
                states = self.health(service)
                if len(states) != count or set(states.values()) != {"healthy"}:
                    return False
            return True

        procs.wait_until(healthy, timeout=timeout, interval=1, what=f"healthy: {expected}")

    def diagnostics(self) -> str:
        """The project as a failed test's report shows it (tests/failure_report.py):
        each container's state and health (with its last health checks when it
        is not healthy), with the ha profile what each Sentinel and node says,
        and the last lines of every container's log."""
        return "\n".join(
            [
                failure_report.section("containers", self._container_states),
                *(
                    [failure_report.section("the HA store", self._ha_store)]
                    if self.containers("sentinel-1")
                    else []
                ),
                failure_report.section("logs", self._log_tails),
            ]
        )

    def _container_states(self) -> str:
        lines = []
        for container in self.containers(all_states=True):
            state = container["State"]
            health = state.get("Health") or {}
            service = container["Config"]["Labels"].get("com.docker.compose.service")
            lines.append(
                f"{service} {container['Name'].lstrip('/')} {container['Config']['Hostname']} "
                f"{state['Status']} (exit {state.get('ExitCode')}) "
                f"health={health.get('Status', 'none')}"
            )
            if health and health.get("Status") != "healthy":
                lines += [
                    f"    check {check.get('Start', '')[:23]}: exit {check.get('ExitCode')} "
                    f"{check.get('Output', '').strip()[:200]}"
                    for check in health.get("Log", [])[-3:]
                ]
        return "\n".join(lines) or "(no container)"

    def _ha_store(self) -> str:
        """INFO replication of each node and each Sentinel's view, asked inside
        the containers (redis-cli reads the password from REDISCLI_AUTH there)."""
        lines = []
        for service, command in [
            *((n, ("redis-cli", "info", "replication")) for n in HA_NODES),
            *(
                (s, ("redis-cli", "-p", "26379", *question))
                for s in HA_SENTINELS
                for question in (("sentinel", "master", "shop"), ("sentinel", "replicas", "shop"))
            ),
        ]:
            for container in self.containers(service):
                result = self.engine.cli(
                    "exec", container["Id"], *command, check=False, timeout=15
                )
                answer = " ".join((result.stdout + result.stderr).split())
                lines.append(f"{service} {' '.join(command[1:])}: {answer[:1500]}")
        return "\n".join(lines)

    def _log_tails(self) -> str:
        result = self.run(
            "--profile", "ha", "logs", "--no-color", "--tail", str(failure_report.LOG_LINES),
            check=False, timeout=60,
        )  # fmt: skip
        return result.stdout + result.stderr

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        return {
            kind: self.engine.cli(*command, "--filter", label).stdout.split()
            for kind, command in [
                ("containers", ("ps", "-aq")),
                ("networks", ("network", "ls", "-q")),
                ("volumes", ("volume", "ls", "-q")),
            ]
        }


@contextlib.contextmanager
def compose_project(
    engine: PrivateDocker, index: int, extra: dict[str, str] | None = None
) -> Iterator[Compose]:
    """A compose project on `engine`: fresh secrets, the local images, a free
    loopback port, its own subnet; `down --volumes` afterwards, whatever happened."""
    subnet = engine.plan.compose_subnet(index)
    variables = {
        "REDIS_PASSWORD": secrets.token_hex(24),
        "SECRET_KEY": secrets.token_hex(32),
        **engine.images,
        "SHOP_PORT": str(procs.free_port()),
        "SHOP_SUBNET": str(subnet),
        "NGINX_ADDRESS": str(subnet.network_address + 10),
        # Every simulated shopper logs in from the same address (docker-proxy).
        "SHOP_LOGIN_MAX_PER_IP": "10000",
        **(extra or {}),
    }
    compose = Compose(engine, f"shoptest{index}", variables)
    try:
        yield compose
    except Exception:
        # A failed `up` in a fixture, or a failure in a test's own `with`
        # block: shown with the failure (a fixture's value is described by
        # conftest's report hook instead).
        print(compose.diagnostics())
        raise
    finally:
        compose.down()
