"""The cluster laid out on hosts (`up --hosts`): which host runs which process,
at which address and port, and the hosts' part of `status --json`.

`netns.py` makes hosts out of network namespaces; this module decides what
goes on them:

    host         runs                                             address (198.18.N.x)
    lb-1, lb-2   nginx-1/-2 (the shop's port) and keepalived-1/-2   .11, .12; the virtual IP .10
    app-1..N     shop-i (gunicorn, port 8000)                       .101 ...
    redis-1..3   redis (single, on redis-1), or redis-i (6379)      .21 ...
                 and sentinel-i (26379) in HA mode

Each host is a machine of its own, so every service keeps its usual port;
the root namespace (.1) is the client.
"""

from __future__ import annotations

from typing import Any

from . import ha, keepalived, netns
from .netns import Host, Network
from .procs import ClusterError
from .state import Proc, State, Workdir

LB_HOSTS = 2
# The last octet of each kind of host's address: lb-i is .(10+i), and so on.
LB_OCTET, REDIS_OCTET, APP_OCTET = 10, 20, 100
MAX_APP_HOSTS = 150  # app-150 is .250, the last octet below the broadcast's
DEFAULT_PORT = 80  # every load balancer is a host of its own: the usual port
APP_PORT = 8000
REDIS_PORT = 6379
SENTINEL_PORT = 26379


def lb_name(i: int) -> str:
    return f"lb-{i}"


def plan(state: State, workdir: Workdir, subnet: str) -> None:
    """Give a new cluster's `state` its hosts in `subnet` and put every process on one.

    Expects the loopback plan (store, replicas, nginx) and turns it into this:
    nginx becomes nginx-1 on lb-1, with nginx-2 and the keepalived pair beside.
    """
    if len(state.replicas) > MAX_APP_HOSTS:
        raise ClusterError(f"--hosts runs at most {MAX_APP_HOSTS} replicas (one host each)")
    redis_hosts = max(len(state.redis_nodes), len(state.sentinels), 1)
    layout = [(lb_name(i), LB_OCTET + i) for i in range(1, LB_HOSTS + 1)]
    layout += [(f"app-{i}", APP_OCTET + i) for i in range(1, len(state.replicas) + 1)]
    layout += [(f"redis-{i}", REDIS_OCTET + i) for i in range(1, redis_hosts + 1)]
    net = netns.plan(workdir.path, layout, subnet)
    state.network = net

    state.nginx.name = "nginx-1"
    state.nginx_peers = [Proc(f"nginx-{i}", state.port) for i in range(2, LB_HOSTS + 1)]
    state.keepalived = [Proc(f"{keepalived.PREFIX}{i}", 0) for i in range(1, LB_HOSTS + 1)]
    for i, (nginx, vrrp) in enumerate(zip(state.balancers(), state.keepalived, strict=True), 1):
        _place(nginx, net.host(lb_name(i)), state.port)
        _place(vrrp, net.host(lb_name(i)), 0)
    for i, replica in enumerate(state.replicas, 1):
        _place(replica, net.host(f"app-{i}"), APP_PORT)
    if state.redis is not None:
        _place(state.redis, net.host("redis-1"), REDIS_PORT)
    for i, node in enumerate(state.redis_nodes, 1):
        _place(node, net.host(f"redis-{i}"), REDIS_PORT)
    for i, sentinel in enumerate(state.sentinels, 1):
        _place(sentinel, net.host(f"redis-{i}"), SENTINEL_PORT)


def _place(proc: Proc, host: Host, port: int) -> None:
    proc.address, proc.netns, proc.port = host.address, host.netns, port


def network(state: State) -> Network:
    """The cluster's hosts; ClusterError if it runs on loopback."""
    if state.network is None:
        raise ClusterError("this cluster runs on loopback; hosts exist with `up --hosts`")
    return state.network


def find(state: State, name: str) -> Host:
    return network(state).host(name)


def on(state: State, host: Host) -> list[Proc]:
    """The processes of `host`, in the order it boots them (store, app, nginx, keepalived)."""
    return [p for p in state.processes() if p.netns == host.netns]


def host_of(state: State, proc: Proc) -> Host | None:
    """The host `proc` runs on (None on loopback)."""
    if state.network is None:
        return None
    return next((h for h in state.network.hosts if h.netns == proc.netns), None)


def balancer_hosts(state: State) -> list[Host]:
    net = network(state)
    return [net.host(lb_name(i)) for i in range(1, LB_HOSTS + 1)]


def keepalived_settings(state: State, proc: Proc) -> keepalived.KeepalivedSettings:
    """The keepalived config of `proc` (keepalived-i on lb-i)."""
    index = state.keepalived.index(proc)
    return keepalived.settings(network(state), balancer_hosts(state), index, state.port)


def vip_holder(state: State) -> Host | None:
    """The load balancer holding the virtual IP now (None: nobody, or loopback)."""
    if state.network is None:
        return None
    return keepalived.holder(state.network, balancer_hosts(state))


def replica_settings(state: State) -> dict[str, str]:
    """What a replica must know of the hosts: its proxies are the load balancers,
    whose X-Forwarded-For (the shopper's address) it may believe."""
    if state.network is None:
        return {}
    proxies = ",".join(n.address for n in state.balancers())
    return {"SHOP_TRUSTED_PROXIES": proxies, "SHOP_FORWARDED_ALLOW_IPS": proxies}


def status(state: State) -> list[dict[str, Any]]:
    """The `hosts` of `status --json`: name, address, up (its cable is plugged in and
    it was not powered off), vip (it holds the virtual IP now)."""
    net = network(state)
    holder = vip_holder(state)
    return [
        {
            "name": host.name,
            "address": host.address,
            "up": host.name not in net.powered_off and netns.link_up(net, host),
            "vip": holder is not None and host.name == holder.name,
            "processes": [p.name for p in on(state, host)],
        }
        for host in net.hosts
    ]


def primary_host(state: State) -> Host | None:
    """The host of the Redis primary now (HA: as the Sentinels say; single: redis-1)."""
    primary = ha.current_primary(state) if state.ha else state.redis
    return host_of(state, primary) if primary is not None else None
