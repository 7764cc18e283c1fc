"""The ha overlay's Redis start script (deploy/k8s/overlays/ha/redis-ha.sh), run for real.

No Kubernetes here, so each of the three Redis pods is played by a network
namespace of its own on a bridge (a free /24 of 198.18.64.0/18, benchmarking
space that no LAN uses; the Docker tests take theirs from 198.19.0.0/16), with
an /etc/hosts that gives the pods their StatefulSet names (redis-0.redis, ...),
and runs exactly what the pod runs: the script from the rendered ConfigMap,
with the rendered settings and the rendered redis-server arguments, for the
Redis node and for the Sentinel. Real redis-server, real Sentinels.

What it shows: the first start makes redis-0 the primary with two replicas
and three Sentinels, every node with `--redis ha`'s write guard
(min-replicas-to-write); losing redis-0's node (both its processes SIGKILLed)
promotes a replica, and an acknowledged write survives; redis-0 restarted
comes back as a replica of the new primary (asked of the Sentinels), never as a
second primary; with both replicas' nodes gone, the primary refuses a write
(NOREPLICAS, nothing written) and still serves reads; and after every process
is killed and restarted together, the promoted node is still the primary (each
pod's Sentinel config on its volume remembers it), so the old data of redis-0
never wins.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import k8s_support as k8s
import pytest
import redis

from shop.cluster import ha, procs

pytestmark = pytest.mark.integration

# The pods' /24 is the first of these that no route on the machine overlaps
# (the hosts mode uses 198.18.0.0/24, the Docker tests 198.19.0.0/16).
CANDIDATE_SUBNETS = list(ipaddress.ip_network("198.18.64.0/18").subnets(new_prefix=24))
PASSWORD = k8s.PLACEHOLDER_SECRETS["REDIS_PASSWORD"]
# Sentinel's own timing is the overlay's (down after 5 s): a failover takes
# about 6 to 8 s here. Every wait below is bounded well above that.
FAILOVER_TIMEOUT_S = 40
START_TIMEOUT_S = 30
COMMAND_TIMEOUT_S = 30


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S)


def free_subnet() -> ipaddress.IPv4Network:
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=True,
    ).stdout
    taken = []
    for line in routes.splitlines():
        words = line.split()
        destination = words[1] if words and words[0] in ("local", "broadcast") else words[0]
        with contextlib.suppress(ValueError):
            taken.append(ipaddress.ip_network(destination, strict=False))
    for subnet in CANDIDATE_SUBNETS:
        if not any(subnet.overlaps(route) for route in taken if route.prefixlen > 0):
            return subnet
    raise RuntimeError("no free /24 in 198.18.64.0/18 for the test pods")


@dataclass
class Pod:
    """One Redis pod: its namespace, address, volume, and the two processes it runs."""

    index: int
    netns: str
    folder: Path
    subnet: ipaddress.IPv4Network
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"redis-{self.index}"

    @property
    def address(self) -> str:
        return str(self.subnet[10 + self.index])

    def node(self) -> redis.Redis:
        return redis.Redis(
            host=self.address, port=6379, password=PASSWORD, socket_timeout=5,
            socket_connect_timeout=2, decode_responses=True,
        )  # fmt: skip

    def sentinel(self) -> redis.Redis:
        return redis.Redis(
            host=self.address, port=26379, password=PASSWORD, socket_timeout=5,
            socket_connect_timeout=2, decode_responses=True,
        )  # fmt: skip


@dataclass
class HaPods:
    """Three pods running the rendered ha overlay's Redis containers."""

    pods: list[Pod]
    script: Path
    hosts: Path
    settings: dict[str, str]
    node_args: list[str]

    def start(self, pod: Pod, roles: tuple[str, ...] = ("node", "sentinel")) -> None:
        for role in roles:
            env = {
                "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                **self.settings,
                "POD_NAME": pod.name,
                "REDIS_PASSWORD": PASSWORD,
                "REDISCLI_AUTH": PASSWORD,  # both containers have it
                "SENTINEL_DIR": str(pod.folder / "data" / "sentinel"),
            }
            args = []
            if role == "node":
                args = [
                    str(pod.folder / "data")
                    if a == "/data"
                    else a.replace("$(REDIS_PASSWORD)", PASSWORD)
                    for a in self.node_args
                ]
            inner = (
                f"mount --bind {shlex.quote(str(self.hosts))} /etc/hosts && "
                f"exec sh {shlex.quote(str(self.script))} {role} {shlex.join(args)}"
            )
            argv = ["ip", "netns", "exec", pod.netns, "unshare", "--mount", "sh", "-c", inner]
            pod.processes[role] = procs.spawn(argv, log_path=pod.folder / f"{role}.log", env=env)

    def kill(self, pod: Pod, roles: tuple[str, ...] = ("node", "sentinel")) -> None:
        """The pod's node is lost (by default): its processes die at once."""
        for role in roles:
            process = pod.processes.pop(role, None)
            if process is not None:
                procs.signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=COMMAND_TIMEOUT_S)

    def logs(self) -> str:
        return "\n".join(
            f"--- {pod.name} {log.name}:\n{log.read_text()[-1500:]}"
            for pod in self.pods
            for log in sorted(pod.folder.glob("*.log"))
        )


def role(pod: Pod) -> dict[str, str]:
    return pod.node().info("replication")


def primary_named_by(pod: Pod) -> str:
    host, _ = pod.sentinel().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", HA_MASTER_NAME)
    return host


HA_MASTER_NAME = "shop"
# `shop-cluster up --redis ha`'s write guard, which every node must run with.
WRITE_GUARD = {k: v for k, v in ha.NODE_SETTINGS.items() if k.startswith("min-replicas")}


def write_guard(pod: Pod) -> dict[str, str]:
    """The guard the pod's running redis-server has, by CONFIG GET."""
    node = pod.node()
    return {name: node.config_get(name)[name] for name in WRITE_GUARD}


def sentinel_sees_everyone(pod: Pod) -> bool:
    """This pod's Sentinel watches redis-0 and knows both replicas and both other
    Sentinels. Replicas are learnt from the primary's INFO, every 10 s: before
    that, a Sentinel has no replica to promote (-failover-abort-no-good-slave)."""
    master = pod.sentinel().sentinel_master(HA_MASTER_NAME)
    return (
        primary_named_by(pod) == "redis-0.redis"
        and int(master["num-slaves"]) == 2
        and int(master["num-other-sentinels"]) == 2
    )


def start_lines(pod: Pod) -> list[str]:
    """The roles redis-ha.sh started this pod's node in, from its log."""
    log = pod.folder / "node.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith("redis-ha: starting")]


def last_start(pod: Pod) -> str:
    return start_lines(pod)[-1]


@pytest.fixture
def ha_pods(tmp_path: Path) -> Iterator[HaPods]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces (CI runs as root)")
    if k8s.kubectl_binary() is None:
        pytest.skip("kubectl is not installed, so the ha overlay cannot be rendered")
    try:
        procs.find_binary("redis-server")
    except procs.MissingBinary as exc:
        pytest.skip(str(exc))
    objects = k8s.kustomize(k8s.copy_tree(tmp_path) / "overlays" / "ha")
    configmaps = {c["metadata"]["name"]: c["data"] for c in k8s.of_kind(objects, "ConfigMap")}
    (script_text,) = [d["redis-ha.sh"] for d in configmaps.values() if "redis-ha.sh" in d]
    (settings,) = [d for d in configmaps.values() if "REDIS_NODES" in d]
    assert settings["REDIS_MASTER_NAME"] == HA_MASTER_NAME
    statefulset = k8s.find(objects, "StatefulSet", "redis")
    (node,) = [c for c in k8s.containers(statefulset) if c["name"] == "redis"]
    script = tmp_path / "redis-ha.sh"
    script.write_text(script_text)
    subnet = free_subnet()
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n"
        + "".join(
            f"{subnet[10 + i]} {name}\n" for i, name in enumerate(settings["REDIS_NODES"].split())
        )
    )
    tag = f"k8sha{os.getpid() % 100000}"
    bridge = tag
    pods = [
        Pod(index=i, netns=f"{tag}-{i}", folder=tmp_path / f"redis-{i}", subnet=subnet)
        for i in range(statefulset["spec"]["replicas"])
    ]
    cluster = HaPods(pods, script, hosts, settings, node["args"])
    try:
        run("ip", "link", "add", bridge, "type", "bridge")
        run("ip", "addr", "add", f"{subnet[1]}/{subnet.prefixlen}", "dev", bridge)
        run("ip", "link", "set", bridge, "up")
        for pod in pods:
            (pod.folder / "data").mkdir(parents=True)
            outside, inside = f"{tag}v{pod.index}", f"{tag}p{pod.index}"
            run("ip", "netns", "add", pod.netns)
            run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            run("ip", "link", "set", inside, "netns", pod.netns)
            run("ip", "link", "set", outside, "master", bridge, "up")
            run(
                "ip",
                "-n",
                pod.netns,
                "addr",
                "add",
                f"{pod.address}/{subnet.prefixlen}",
                "dev",
                inside,
            )
            run("ip", "-n", pod.netns, "link", "set", inside, "up")
            run("ip", "-n", pod.netns, "link", "set", "lo", "up")
        yield cluster
    finally:
        for pod in pods:
            for process in pod.processes.values():
                procs.stop_process(process.pid, timeout=5)
            subprocess.run(["ip", "netns", "del", pod.netns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=30)


def wait(condition, what: str, timeout: float, cluster: HaPods) -> float:
    started = time.monotonic()
    try:
        procs.wait_until(condition, timeout=timeout, interval=0.2, what=what)
    except TimeoutError:
        print(cluster.logs())
        raise
    return time.monotonic() - started


def test_ha_pods_elect_fail_over_and_never_bring_back_a_stale_primary(ha_pods: HaPods) -> None:
    cluster = ha_pods
    first, *others = cluster.pods
    everyone = cluster.pods

    # 1. First start, all pods at once (podManagementPolicy: Parallel).
    for pod in everyone:
        cluster.start(pod)

    def formed() -> bool:
        replication = role(first)
        return (
            replication["role"] == "master"
            and replication["connected_slaves"] == 2
            and all(sentinel_sees_everyone(p) for p in everyone)
        )

    took = wait(formed, "redis-0 primary, 2 replicas, 3 Sentinels", START_TIMEOUT_S, cluster)
    print(f"formed in {took:.1f} s: redis-0 primary, two replicas, three Sentinels")
    for pod in others:
        assert role(pod)["master_host"] == "redis-0.redis"
    # Any node may become primary, so each runs with the guard.
    for pod in everyone:
        assert write_guard(pod) == WRITE_GUARD, pod.name

    # 2. An acknowledged write (as the shop makes it: WAIT for one replica).
    primary = first.node()
    primary.set("cart:ada", "3 cups")
    assert primary.wait(1, 1500) >= 1

    # 3. redis-0's node is lost. The other two Sentinels promote a replica.
    cluster.kill(first)
    lost_at = time.monotonic()
    promoted: list[str] = []

    def failed_over() -> bool:
        named = {primary_named_by(p) for p in others}
        if len(named) == 1 and named != {"redis-0.redis"}:
            (name,) = named
            pod = next(p for p in others if f"{p.name}.redis" == name)
            if role(pod)["role"] == "master":
                promoted[:] = [name]
                return True
        return False

    wait(failed_over, "a replica promoted", FAILOVER_TIMEOUT_S, cluster)
    new_primary = next(p for p in others if f"{p.name}.redis" == promoted[0])
    print(f"failover: {promoted[0]} primary {time.monotonic() - lost_at:.1f} s after the loss")
    assert new_primary.node().get("cart:ada") == "3 cups"

    # 4. redis-0 comes back: as a replica of the new primary, not a second primary.
    cluster.start(first)

    def rejoined() -> bool:
        replication = role(first)
        return (
            replication["role"] == "slave"
            and replication["master_host"] == promoted[0]
            and replication["master_link_status"] == "up"
            and primary_named_by(first) == promoted[0]
            and role(new_primary)["connected_slaves"] == 2
        )

    took = wait(rejoined, "redis-0 to rejoin as a replica", START_TIMEOUT_S, cluster)
    print(f"redis-0 rejoined as a replica of {promoted[0]} in {took:.1f} s")
    assert first.node().get("cart:ada") == "3 cups"
    assert last_start(first).endswith(f"a replica of {promoted[0]}"), last_start(first)
    new_primary.node().set("cart:ada", "4 cups")
    assert new_primary.node().wait(2, 1500) == 2

    # 5. Both replicas' Redis nodes die (their Sentinels stay: no failover).
    #    The primary refuses the next write outright, and still serves reads.
    replicas = [p for p in everyone if p is not new_primary]
    for pod in replicas:
        cluster.kill(pod, roles=("node",))
    wait(
        lambda: role(new_primary)["connected_slaves"] == 0,
        "the primary to see both replicas gone",
        START_TIMEOUT_S,
        cluster,
    )
    with pytest.raises(redis.ResponseError, match="^NOREPLICAS"):
        new_primary.node().set("cart:ada", "5 cups")
    assert new_primary.node().get("cart:ada") == "4 cups"  # refused: nothing written
    print("both replicas gone: the primary refuses writes (NOREPLICAS) and serves reads")

    # 6. Every process dies and all restart (a whole-StatefulSet restart).
    #    The nodes start before any Sentinel answers, so each takes the primary
    #    its own Sentinel recorded on the volume: the promoted node stays primary.
    for pod in everyone:
        cluster.kill(pod)
    starts = {pod.name: len(start_lines(pod)) for pod in everyone}
    for pod in everyone:
        cluster.start(pod, roles=("node",))
    wait(
        lambda: all(len(start_lines(p)) > starts[p.name] for p in everyone),
        "every node to choose its role",
        START_TIMEOUT_S,
        cluster,
    )
    for pod in everyone:
        cluster.start(pod, roles=("sentinel",))

    def reformed() -> bool:
        masters = [p for p in everyone if role(p)["role"] == "master"]
        return (
            [f"{p.name}.redis" for p in masters] == promoted
            and role(new_primary)["connected_slaves"] == 2
            and {primary_named_by(p) for p in everyone} == set(promoted)
        )

    took = wait(reformed, "the promoted node primary again", START_TIMEOUT_S, cluster)
    print(f"after a full restart {promoted[0]} is primary again ({took:.1f} s)")
    # Each node started in that role itself (not demoted afterwards by a Sentinel).
    for pod in everyone:
        wanted = "the primary" if pod is new_primary else f"a replica of {promoted[0]}"
        assert last_start(pod).endswith(wanted), last_start(pod)
    for pod in everyone:
        assert pod.node().get("cart:ada") == "4 cups"
