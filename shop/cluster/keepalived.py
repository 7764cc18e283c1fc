"""keepalived on the load-balancer hosts (`up --hosts`): one virtual IP that
lb-1 and lb-2 pass between them with VRRP.

The config comes from the one commented template beside this module
(`keepalived.conf.j2`); every timer in it says why it is what it is. Each
keepalived runs in its host's namespace, in the foreground, logging to the
workdir, with its pid files in its own folder. Who holds the address is read
from the hosts' interfaces, not asked of keepalived: that is what clients see.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from . import netns, nginxconf, procs
from .netns import Host, Network
from .procs import ClusterError
from .state import Proc, Workdir

TEMPLATE_NAME = "keepalived.conf.j2"
PREFIX = "keepalived-"
# One VRRP router on the cluster's private bridge; any id 1-255 would do.
VIRTUAL_ROUTER_ID = 51
# VRRPv3, 0.2 s: a vanished master is replaced after about 0.7 s (measured
# here: 0.66-0.69 s for a link pulled, 0.35 s for a dead nginx).
ADVERT_INT = 0.2
# lb-1 wins the first election; the rest follow in order.
FIRST_PRIORITY = 150
PRIORITY_STEP = 50
CHECK_INTERVAL = 1  # seconds, the smallest keepalived 2.2.7 accepts
# How long the first election may take: one master-down interval (0.7 s) on
# a quiet machine; keepalived's own start and a loaded machine add seconds.
ELECTION_TIMEOUT = 30.0
# keepalived's pid files, each in the keepalived's own folder: option -> file.
PID_FILES = {"--pid": "keepalived.pid", "--vrrp_pid": "vrrp.pid", "--checkers_pid": "checkers.pid"}


@dataclass(frozen=True)
class KeepalivedSettings:
    """Everything the template varies on; the field names are its variables."""

    router_id: str
    interface: str
    address: str
    peers: tuple[str, ...]
    vip: str
    prefix_length: int
    priority: int
    check_command: str
    virtual_router_id: int = VIRTUAL_ROUTER_ID
    advert_int: float = ADVERT_INT
    check_interval: int = CHECK_INTERVAL

    @property
    def master_down_ms(self) -> int:
        """How long the backup waits for a silent master (RFC 5798 §6.1)."""
        skew = (256 - self.priority) / 256 * self.advert_int
        return round((3 * self.advert_int + skew) * 1000)


def render(settings: KeepalivedSettings) -> str:
    """The keepalived.conf text for `settings`."""
    template = nginxconf.template_environment().get_template(TEMPLATE_NAME)
    return template.render(**asdict(settings), master_down_ms=settings.master_down_ms)


def settings(
    net: Network, hosts: list[Host], index: int, port: int
) -> KeepalivedSettings:
    """The settings of the `index`-th (0-based) of the load balancers `hosts`,
    whose nginx listens on `port`."""
    host = hosts[index]
    health = f"http://127.0.0.1:{port}{nginxconf.HEALTH_PATH}"
    return KeepalivedSettings(
        router_id=host.name,
        interface=netns.HOST_IFACE,
        address=host.address,
        peers=tuple(h.address for h in hosts if h is not host),
        vip=net.vip,
        prefix_length=netns.PREFIX_LENGTH,
        priority=FIRST_PRIORITY - index * PRIORITY_STEP,
        # curl, not keepalived's process tracking: that fails inside a namespace.
        check_command=f"{procs.find_binary('curl')} -sf -o /dev/null -m 1 {health}",
    )


def start(workdir: Workdir, proc: Proc, conf: KeepalivedSettings) -> None:
    """Start keepalived `proc` in its host's namespace with `conf`."""
    folder = workdir.proc_dir(proc)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "keepalived.conf"
    path.write_text(render(conf))
    argv = [
        procs.find_binary("keepalived"),
        "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
        "--vrrp",  # VRRP only: no health-checker (LVS) or BFD processes
        "--use-file", str(path),
    ]  # fmt: skip
    for option, name in PID_FILES.items():
        # A boot starts without pid files (they live in /run, a tmpfs). keepalived
        # refuses to start ("daemon is already running") while one names a process
        # that exists, and the one killed at power-off can still be a zombie for a
        # moment: a power-on right after the power-off (the demo's) met exactly that.
        (folder / name).unlink(missing_ok=True)
        argv += [option, str(folder / name)]
    proc.record(procs.spawn(argv, log_path=workdir.log(proc), netns=proc.netns))


def holder(net: Network, hosts: list[Host]) -> Host | None:
    """The load-balancer host that has the virtual IP on its interface now."""
    return next((h for h in hosts if net.vip in netns.addresses(h)), None)


def wait_for_election(
    workdir: Workdir, net: Network, hosts: list[Host], winner: Host, proc: Proc
) -> None:
    """Until `winner` (whose keepalived is `proc`) holds the virtual IP."""
    log = workdir.log(proc)

    def elected() -> bool:
        if not procs.pid_alive(proc.pid):
            raise ClusterError(f"{proc.name} exited at start; see {log}:\n{procs.tail(log)}")
        return holder(net, hosts) == winner

    procs.wait_for(elected, f"{winner.name} to take {net.vip} (log: {log})", ELECTION_TIMEOUT)
