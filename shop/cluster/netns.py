"""Hosts made of Linux network namespaces, for `shop-cluster up --hosts`.

Every node of the cluster gets a "host": a network namespace of its own with
one interface, `eth0`, and one address on a private /24. The hosts hang off
one bridge, which lives in a namespace of its own (the "switch"), so the
machine's own namespace gets a single link, to be the client:

    root namespace: the client (browser, shoppers, tests, the launcher's probes)
      └─ shop-<id> (198.18.N.1) ══ veth ══ "client" port ─┐
    shop-<id>-switch: bridge br0                            ├─ br0
      ├─ port "lb-1"  ══ veth ══ eth0 of shop-<id>-lb-1  ──┤
      ├─ port "app-1" ══ veth ══ eth0 of shop-<id>-app-1 ──┘  ... one per host

<id> comes from the workdir, so two clusters never share a name; N is the
first /24 of 198.18.0.0/16 (RFC 2544's benchmarking range) that nothing in the
root namespace uses yet. Nothing is routed: no default route, no forwarding,
no NAT, no real interface on the bridge.

Failures are made where a real network makes them: `set_link` takes a host's
switch port down (its cable pulled: packets vanish, nobody is told), and
`apply_partitions` drops the packets between two sets of hosts on the
bridge with an nftables `bridge` table in the switch namespace. Why nftables:
this kernel has no `tc` drop action (no act_gact, no cls_flower, no netem),
and a blackhole or prohibit route, or an iptables OUTPUT drop, fails the
sender's own connect() at once (EINVAL/EPERM) instead of leaving it hanging
as a cut cable does; a drop in the switch is invisible to both ends.

Every command here needs root (CAP_NET_ADMIN); `unavailable()` says why it
cannot run before anything is made.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import procs
from .procs import ClusterError

# RFC 2544's network-benchmark range: never routed on the internet, and not
# the private ranges a developer's own networks use. One /24 per cluster.
SUPERNET = ipaddress.ip_network("198.18.0.0/16")
PREFIX_LENGTH = 24
# Addresses inside a cluster's /24, by the last octet.
CLIENT_OCTET = 1  # the root namespace
VIP_OCTET = 10  # the load balancers' virtual IP
BRIDGE = "br0"
HOST_IFACE = "eth0"
CLIENT_PORT = "client"  # the client's port on the switch
PARTITION_TABLE = "shop_partition"
# Serialises choosing a /24 between clusters started at the same moment.
SUBNET_LOCK = Path("/run/lock/shop-cluster-hosts.lock")
# How long one `ip`/`nft` command may take; they answer in milliseconds.
COMMAND_TIMEOUT = 20.0
# After SIGKILL, how long a namespace's processes may take to be gone.
KILL_TIMEOUT = 10.0


@dataclass
class Host:
    """One host: its name (``app-1``), its address, its network namespace."""

    name: str
    address: str
    netns: str


@dataclass
class Network:
    """The hosts of one cluster and the names of everything made for them.

    Saved in the state file before anything is made, so `down` finds all of it
    even after the launcher crashed half-way.
    """

    id: str  # the prefix of every name: shop-<6 hex digits of the workdir's hash>
    subnet: str  # e.g. 198.18.0.0/24
    hosts: list[Host] = field(default_factory=list)
    powered_off: list[str] = field(default_factory=list)  # host names whose link is down
    partitions: list[list[str]] = field(default_factory=list)  # [host, host] pairs cut apart

    @property
    def switch(self) -> str:
        return f"{self.id}-switch"

    @property
    def client_link(self) -> str:
        """The root namespace's end of the client's veth (an interface name: ≤ 15 chars)."""
        return self.id

    @property
    def client_address(self) -> str:
        return self.address(CLIENT_OCTET)

    @property
    def vip(self) -> str:
        return self.address(VIP_OCTET)

    def address(self, octet: int) -> str:
        return str(ipaddress.ip_network(self.subnet)[octet])

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        names = ", ".join(h.name for h in self.hosts)
        raise ClusterError(f"no host named {name!r} in this cluster (there are: {names})")

    def namespaces(self) -> list[str]:
        return [self.switch, *(h.netns for h in self.hosts)]

    @classmethod
    def from_dict(cls, data: dict) -> Network:
        return cls(
            id=data["id"],
            subnet=data["subnet"],
            hosts=[Host(**h) for h in data.get("hosts", [])],
            powered_off=list(data.get("powered_off", [])),
            partitions=[list(p) for p in data.get("partitions", [])],
        )


# ---------------------------------------------------------------- planning
def unavailable() -> str | None:
    """Why hosts mode cannot run here (one line), or None if it can."""
    if os.geteuid() != 0:
        return "--hosts needs root (it makes network namespaces, links and a bridge)"
    try:
        procs.find_binary("ip")
    except procs.MissingBinary as exc:
        return str(exc)
    probe = f"shop-probe-{os.getpid()}"
    made = subprocess.run(
        [procs.find_binary("ip"), "netns", "add", probe],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    if made.returncode != 0:
        return f"network namespaces are not available here: {made.stderr.strip()}"
    _ip("netns", "delete", probe, check=False)
    return None


def network_id(workdir: Path) -> str:
    """shop-<6 hex digits>: the same workdir always gives the same names."""
    digest = hashlib.sha256(str(workdir.absolute()).encode()).hexdigest()
    return f"shop-{digest[:6]}"


def plan(workdir: Path, hosts: Sequence[tuple[str, int]], subnet: str) -> Network:
    """The network of a new cluster: `hosts` are (name, last octet of its address)."""
    net = Network(id=network_id(workdir), subnet=subnet)
    net.hosts = [Host(name, net.address(octet), f"{net.id}-{name}") for name, octet in hosts]
    return net


@contextlib.contextmanager
def subnet_lock() -> Iterator[None]:
    """Held from choosing a /24 until the client link occupies it, so two clusters
    started together never pick the same one."""
    SUBNET_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(SUBNET_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def free_subnet() -> str:
    """The first /24 of SUPERNET that no address or route of the root namespace
    touches (another cluster's client link holds one)."""
    return first_free(_root_networks())


def first_free(used: Sequence[str]) -> str:
    """The first /24 of SUPERNET that overlaps none of the networks `used`."""
    taken = [ipaddress.ip_network(n, strict=False) for n in used]
    for candidate in SUPERNET.subnets(new_prefix=PREFIX_LENGTH):
        if not any(candidate.overlaps(n) for n in taken):
            return str(candidate)
    raise ClusterError(f"every /24 of {SUPERNET} is in use; stop another hosts-mode cluster")


def _root_networks() -> list[str]:
    addrs = json.loads(_ip("-j", "-4", "addr").stdout or "[]")
    routes = json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")
    found = [f"{a['local']}/{a['prefixlen']}" for i in addrs for a in i.get("addr_info", [])]
    found += [r["dst"] for r in routes if r.get("dst") not in (None, "default")]
    return found


# ------------------------------------------------------------ make, unmake
def create(net: Network) -> None:
    """Make the switch, one host per `net.hosts` and the client link."""
    prefix = ipaddress.ip_network(net.subnet).prefixlen
    _add_namespace(net.switch)
    _ip("-n", net.switch, "link", "add", BRIDGE, "type", "bridge")
    _ip("-n", net.switch, "link", "set", BRIDGE, "up")
    for host in net.hosts:
        _add_namespace(host.netns)
        _ip("-n", net.switch, "link", "add", host.name, "type", "veth",
            "peer", "name", HOST_IFACE, "netns", host.netns)  # fmt: skip
        _ip("-n", net.switch, "link", "set", host.name, "master", BRIDGE, "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/{prefix}", "dev", HOST_IFACE)
        _ip("-n", host.netns, "link", "set", HOST_IFACE, "up")
    _ip("link", "add", net.client_link, "type", "veth",
        "peer", "name", CLIENT_PORT, "netns", net.switch)  # fmt: skip
    _ip("-n", net.switch, "link", "set", CLIENT_PORT, "master", BRIDGE, "up")
    _ip("addr", "add", f"{net.client_address}/{prefix}", "dev", net.client_link)
    _ip("link", "set", net.client_link, "up")


def _add_namespace(name: str) -> None:
    _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")


def destroy(net: Network) -> None:
    """Remove everything `create` made (whatever part of it exists), and anything
    else named after this cluster: processes left in its namespaces die first."""
    sweep(net.id)


def sweep(network_id: str) -> None:
    """Remove every namespace and link whose name starts with `network_id`.

    Deleting the switch namespace deletes the bridge and every port on it,
    and with a veth's end its peer: the hosts' eth0 and the client link.
    """
    names = [n for n in namespaces() if n == network_id or n.startswith(f"{network_id}-")]
    for name in names:
        kill_all(name)
    for name in names:
        _ip("netns", "delete", name, check=False)
    if link_exists(network_id):
        _ip("link", "delete", network_id, check=False)


def namespaces() -> list[str]:
    """Every named network namespace (`ip netns list`)."""
    listed = json.loads(_ip("-j", "netns", "list").stdout or "[]")
    return [entry["name"] for entry in listed]


def link_exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


# ------------------------------------------------------------------- hosts
def set_link(net: Network, host: Host, up: bool) -> None:
    """Plug (`up`) or pull a host's cable: its port on the switch."""
    _ip("-n", net.switch, "link", "set", host.name, "up" if up else "down")


def link_up(net: Network, host: Host) -> bool:
    shown = json.loads(_ip("-n", net.switch, "-j", "link", "show", "dev", host.name).stdout)
    return bool(shown) and "UP" in shown[0].get("flags", [])


def pids(netns: str) -> list[int]:
    """Every process running in namespace `netns`."""
    listed = _ip("netns", "pids", netns, check=False).stdout.split()
    return [int(p) for p in listed if p.isdigit()]


def kill_all(netns: str) -> list[int]:
    """Stop every process in `netns` at once (SIGSTOP: none can react to the others
    dying, no nginx master respawns a worker), then SIGKILL them; return once
    they are gone. These are all ours: the namespace exists only for our cluster."""
    victims = pids(netns)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    deadline = time.monotonic() + KILL_TIMEOUT
    while time.monotonic() < deadline and any(procs.pid_alive(p) for p in victims):
        for pid in victims:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # our own children would linger as zombies
        time.sleep(0.05)
    return victims


def addresses(host: Host) -> list[str]:
    """The IPv4 addresses on the host's eth0 (its own, and the VIP while it holds it)."""
    shown = _ip("-n", host.netns, "-j", "-4", "addr", "show", "dev", HOST_IFACE, check=False)
    if shown.returncode != 0:
        return []
    return [a["local"] for i in json.loads(shown.stdout or "[]") for a in i.get("addr_info", [])]


def forget_addresses(host: Host) -> None:
    """Remove every address but the host's own: what a reboot does to an address
    that keepalived had added (it lived in the dead machine's memory only)."""
    prefix = ipaddress.ip_network(host_subnet(host)).prefixlen
    for address in addresses(host):
        if address != host.address:
            _ip("-n", host.netns, "addr", "del", f"{address}/{prefix}", "dev", HOST_IFACE,
                check=False)  # fmt: skip


def host_subnet(host: Host) -> str:
    return str(ipaddress.ip_network(f"{host.address}/{PREFIX_LENGTH}", strict=False))


# -------------------------------------------------------------- partitions
def partition_ruleset(net: Network) -> str:
    """The nftables ruleset cutting every pair in `net.partitions`, both ways.

    A `bridge` table in the switch namespace sees every frame the bridge
    forwards; dropping IPv4 between two addresses there makes their packets
    vanish while ARP still works, exactly a network that loses them. Replaced
    as a whole (declare, flush, fill) in one `nft -f` transaction.
    """
    rules = []
    for a, b in net.partitions:
        first, second = net.host(a).address, net.host(b).address
        rules.append(f"        ip saddr {first} ip daddr {second} drop")
        rules.append(f"        ip saddr {second} ip daddr {first} drop")
    body = "\n".join(rules)
    return (
        f"table bridge {PARTITION_TABLE}\n"
        f"flush table bridge {PARTITION_TABLE}\n"
        f"table bridge {PARTITION_TABLE} {{\n"
        f"    chain forward {{\n"
        f"        type filter hook forward priority 0; policy accept;\n"
        f"{body}\n"
        f"    }}\n"
        f"}}\n"
    )


def apply_partitions(net: Network) -> None:
    """Make the switch drop what `net.partitions` says (nothing: remove the table)."""
    if net.partitions:
        nft = procs.find_binary("nft")
        _run(procs.in_netns(net.switch, [nft, "-f", "-"]), stdin=partition_ruleset(net))
        return
    with contextlib.suppress(procs.MissingBinary):  # without nft, no table was ever made
        nft = procs.find_binary("nft")
        delete = [nft, "delete", "table", "bridge", PARTITION_TABLE]
        _run(procs.in_netns(net.switch, delete), check=False)


# ------------------------------------------------------------------ helpers
def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run([procs.find_binary("ip"), *args], check=check)


def _run(
    argv: list[str], *, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    if check and result.returncode != 0:
        command = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))
        raise ClusterError(f"`{command}` failed: {result.stderr.strip()}")
    return result
