"""Redis high availability for the local cluster: a primary, its replicas, three Sentinels.

Everything the launcher does with the HA store (``up --redis ha``) is here:
which nodes and Sentinels a cluster has, their configs, starting them (at `up`
and one by one at `start NAME`), asking who is primary, and their part of
`status`. `store.py` chooses between this and the single redis-server.

Sentinel decides who is primary, not us: after the first start every
question "which node is primary now?" is asked of the Sentinels
(SENTINEL GET-MASTER-ADDR-BY-NAME), and a node that comes back is started as a
replica of whatever they name, which is also what Sentinel itself would make
of it a moment later.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shop import replication

from . import procs
from .state import Proc, State, Workdir

SERVICE = "shop"
QUORUM = 2
# How long a node may not answer before a Sentinel calls it down: short enough
# that a test sees a failover in a few seconds, long enough that a busy host
# is not taken for a dead one. A loaded 2-core machine can starve a healthy
# Sentinel for about a second; with 1 s, one starved right after a failover
# called the new primary down, and since a Sentinel counts its peers' "down"
# replies about the old primary for up to 5 s after they were given, that was
# a quorum: a second, needless failover (11 s of 503s, seen in a test run).
# docker-compose uses 2 s too; a production setup would pick more (a GC pause
# or a slow disk must not trigger one; the k8s overlay uses 5 s).
DOWN_AFTER_MS = 2000
# Sentinel's bound on one failover once the primary is called down (the
# election, the promotion, the replicas repointed), and half its wait before
# trying the same primary again; it does not count DOWN_AFTER_MS.
FAILOVER_TIMEOUT_MS = 4000
NODE_PREFIX = "redis-"
SENTINEL_PREFIX = "sentinel-"
PRIMARY_ALIAS = "redis-primary"
SENTINELS = 3
# Two replicas: after the loss of any one node (the primary included) a
# replica is still there to acknowledge writes (WAIT 1), so writes resume as
# soon as Sentinel has promoted a node. With one, they stop until the lost
# node is back (ONE_REPLICA_NOTE); `--redis-replicas 1` is the user's choice.
DEFAULT_REPLICAS = 2
MAX_REPLICAS = 5
ONE_REPLICA_NOTE = (
    "With 1 Redis replica, losing either node leaves none to acknowledge writes: "
    "after a failover the shop serves reads but answers writes with 503 until the "
    "lost node is back as a replica. The default, 2 replicas, keeps taking writes."
)

# Redis's own guard against writing into a primary that has lost its
# replicas, beside the shop's WAIT. WAIT alone makes a write count only once a
# replica has it, but a write it times out on stays applied on the primary
# (Redis cannot undo it): a shopper told "503" would see it in the cart, and
# on a primary cut off from its replicas such writes pile up until Sentinel
# demotes it and they vanish. With the guard the primary refuses a write
# outright (NOREPLICAS: a 503 that changed nothing; no sooner, though: the
# WAIT pipelined with it still waits out its timeout) while fewer than
# MIN_REPLICAS_TO_WRITE replicas have acknowledged its stream within the last
# MIN_REPLICAS_MAX_LAG seconds. Measured: scripts/wait_cost.py, README.
# It asks exactly what WAIT 1 asks, so it stops no write WAIT would have let
# through: with two replicas, writes stop only once both are gone (issue 12's
# second kill), as they would with WAIT alone. Its price: while it refuses,
# every write stops, the shop's unacknowledged ones too (heartbeats, login
# throttle counters, session expiry pushes; the shop skips or reports those).
MIN_REPLICAS_TO_WRITE = 1
# "In sync" as the cluster page and `status` show it (3 s: see there). A
# primary cut off from its replicas (no connection reset to notice) refuses
# writes after about that, about when Sentinel (DOWN_AFTER_MS, then a vote)
# promotes another node; a dead replica is noticed at once (the connection
# closes).
MIN_REPLICAS_MAX_LAG = replication.IN_SYNC_MAX_LAG

# Every node, primary or not (a replica ignores the guard until promoted):
# one full sync at once (no 5 s batching wait), the replica keeps serving
# reads of its last data while it resyncs, and the write guard above.
NODE_SETTINGS = {
    "repl-diskless-sync-delay": "0",
    "min-replicas-to-write": str(MIN_REPLICAS_TO_WRITE),
    "min-replicas-max-lag": str(MIN_REPLICAS_MAX_LAG),
}

# The replica acks every shop replica asks for before a write counts (the
# shop's and the sessions'); the environment of `up` overrides them.
DEFAULT_ACKS = {"SHOP_REPLICA_ACKS": "1", "SESSION_REPLICA_ACKS": "1"}


# --------------------------------------------------------------- configuration
def plan(redis_replicas: int) -> tuple[list[Proc], list[Proc]]:
    """The nodes (redis-1 first, the primary at the start) and Sentinels of a new
    cluster, each on a free port."""
    nodes = [Proc(f"{NODE_PREFIX}{i}", procs.free_port()) for i in range(1, redis_replicas + 2)]
    sentinels = [Proc(f"{SENTINEL_PREFIX}{i}", procs.free_port()) for i in range(1, SENTINELS + 1)]
    return nodes, sentinels


def sentinel_url(sentinels: list[Proc], service: str = SERVICE, password: str = "") -> str:
    """The ``redis+sentinel://`` URL the shop replicas get (sessionstore reads it);
    its password opens the Sentinels and the nodes alike."""
    hosts = ",".join(s.endpoint for s in sentinels)
    auth = f":{password}@" if password else ""
    return f"redis+sentinel://{auth}{hosts}/{service}/0"


def sentinel_conf(*, sentinel: Proc, folder: Path, primary: Proc, password: str = "") -> str:
    """A sentinel.conf for `sentinel`'s address. Sentinel rewrites this file as it
    learns the topology (replicas, other Sentinels, epochs), so it must stay writable.

    With a `password`, a client must AUTH with it (requirepass: an open
    Sentinel would let anyone point the shop at a Redis of their own), and
    the Sentinel gives it to the nodes (auth-pass) and to its peers (sentinel-pass).
    """
    auth = (
        [
            f"requirepass {password}",
            f"sentinel auth-pass {SERVICE} {password}",
            f"sentinel sentinel-pass {password}",
        ]
        if password
        else []
    )
    return "".join(
        f"{line}\n"
        for line in (
            f"port {sentinel.port}",
            f"bind {sentinel.address}",
            # As for the nodes (procs.redis_conf): off the loopback, only on the
            # cluster's private bridge.
            f"protected-mode {'yes' if sentinel.address == procs.LOOPBACK else 'no'}",
            "daemonize no",
            f"dir {folder}",
            f"pidfile {folder / 'sentinel.pid'}",
            'logfile ""',
            f"sentinel monitor {SERVICE} {primary.address} {primary.port} {QUORUM}",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1",
            *auth,
        )
    )


# ------------------------------------------------------------------- starting
def start(workdir: Workdir, state: State) -> None:
    """redis-1 as primary, the others its replicas, then the Sentinels watching redis-1.

    Ready means: every replica is in sync (the primary's write guard lets
    writes through) and every Sentinel sees the primary, its replicas and its
    peers, so a failover can be agreed on from the first second.
    """
    first, *others = state.redis_nodes
    password = state.redis_password
    for node in state.redis_nodes:
        start_node(workdir, node, first, password)
    workdir.save(state)
    procs.wait_for(
        lambda: all(node_info(node, password).link_up for node in others),
        "the Redis replicas to sync with the primary",
    )
    for sentinel in state.sentinels:
        start_sentinel(workdir, sentinel, first, fresh=True, password=password)
    procs.wait_for(
        lambda: all(
            (h := sentinel_health(s, password)).get("ok")
            and h["replicas"] == len(others)
            and h["other_sentinels"] == len(state.sentinels) - 1
            for s in state.sentinels
        ),
        "the Sentinels to discover the replicas and each other",
    )


def start_node(workdir: Workdir, node: Proc, primary: Proc | None, password: str = "") -> None:
    """Start a node as a replica of `primary` (itself or None: as primary), with
    `password` required of clients and given to its primary."""
    extra = dict(NODE_SETTINGS)
    if primary is not None and primary is not node:
        extra["replicaof"] = f"{primary.address} {primary.port}"
    popen = procs.start_redis(
        workdir.proc_dir(node),
        node.port,
        extra=extra,
        timeout=procs.READY_TIMEOUT,
        address=node.address,
        netns=node.netns,
        password=password,
    )
    node.record(popen)


def start_sentinel(
    workdir: Workdir, sentinel: Proc, primary: Proc, *, fresh: bool, password: str = ""
) -> None:
    """Start one Sentinel (``redis-server CONF --sentinel``) with its files in its folder.

    `fresh` writes a new config; a restarted Sentinel keeps the one it rewrote,
    so it remembers the current primary and epoch instead of the first one.
    """
    binary = procs.find_binary("redis-server")
    folder = workdir.proc_dir(sentinel)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = folder / "sentinel.conf"
    if fresh or not conf.exists():
        text = sentinel_conf(sentinel=sentinel, folder=folder, primary=primary, password=password)
        procs.write_private(conf, text)
    log = folder / "sentinel.log"
    popen: subprocess.Popen = procs.spawn(
        [binary, str(conf), "--sentinel"], log_path=log, netns=sentinel.netns
    )
    sentinel.record(popen)
    procs.wait_for(
        lambda: procs.answers(popen, sentinel.port, log, sentinel.address, password),
        f"{sentinel.name} on {sentinel.endpoint} (log: {log})",
    )


def restart(workdir: Workdir, state: State, proc: Proc) -> None:
    """`start NAME` for a node or a Sentinel.

    A node coming back (say, the old primary) starts as a replica of the
    current primary: Sentinel would demote it anyway, and this way it never
    serves a moment as a stale primary. A Sentinel reads the config it rewrote.
    """
    password = state.redis_password
    if proc in state.sentinels:
        # redis-1 is only read if the Sentinel's own config is gone.
        start_sentinel(workdir, proc, state.redis_nodes[0], fresh=False, password=password)
    else:
        start_node(workdir, proc, current_primary(state), password)


# ------------------------------------------------------------------ questions
def _client(proc: Proc, password: str, timeout: float = 1.0) -> redis.Redis:
    """A client of node or Sentinel `proc`; `password` is the cluster's ("" for none)."""
    return redis.Redis(
        host=proc.address,
        port=proc.port,
        password=password or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # One try: redis-py would retry a hung node 10 times (11 timeouts).
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def primary_endpoint(sentinels: list[Proc], password: str) -> str | None:
    """address:port of the primary as the first answering Sentinel names it (None: none answers)."""
    for proc in sentinels:
        try:
            with _client(proc, password) as sentinel:
                addr = sentinel.sentinel_get_master_addr_by_name(SERVICE)
        except redis.RedisError:
            continue
        if addr:
            return f"{addr[0]}:{addr[1]}"
    return None


def current_primary(state: State) -> Proc | None:
    """The node the Sentinels name as primary now (None if none answers)."""
    answering = [s for s in state.sentinels if s.alive() and not s.frozen()]
    endpoint = primary_endpoint(answering, state.redis_password)
    return next((n for n in state.redis_nodes if n.endpoint == endpoint), None)


@dataclass(frozen=True)
class NodeInfo:
    """One Redis node as INFO replication reports it."""

    role: str | None  # "master", "slave", or None when it does not answer
    primary_port: int | None = None  # a replica's primary
    primary_address: str | None = None
    link_up: bool = False  # a replica's link to it


def node_info(proc: Proc, password: str) -> NodeInfo:
    """The role of the node `proc`, from INFO replication (which also gives a
    replica's link state, unlike ROLE)."""
    try:
        with _client(proc, password) as node:
            info = node.info("replication")
    except redis.RedisError:
        return NodeInfo(role=None)
    if info.get("role") == "slave":
        return NodeInfo(
            role="slave",
            primary_port=int(info.get("master_port", 0)) or None,
            primary_address=info.get("master_host"),
            link_up=info.get("master_link_status") == "up",
        )
    return NodeInfo(role=info.get("role"))


def sentinel_health(proc: Proc, password: str) -> dict[str, Any]:
    """What one Sentinel says: its view of the primary, replicas and peer Sentinels."""
    try:
        with _client(proc, password) as sentinel:
            master = sentinel.sentinel_master(SERVICE)
    except redis.RedisError:
        return {"ok": False}
    return {
        "ok": True,
        "primary_port": int(master.get("port", 0)) or None,
        "primary_address": master.get("ip"),
        "primary_ok": not any(f in master.get("flags", "") for f in ("s_down", "o_down")),
        "replicas": int(master.get("num-slaves", 0)),
        "other_sentinels": int(master.get("num-other-sentinels", 0)),
        "quorum": int(master.get("quorum", 0)),
    }


def status(state: State, entry: Callable[[Proc, bool], dict[str, Any]]) -> dict[str, Any]:
    """The HA store in `status --json`: who is primary now (per Sentinel), each
    node's role, whether each replica is in sync (as the primary sees it), each
    Sentinel's view. `entry` makes a process's common fields."""
    primary = current_primary(state)
    links = _replica_links(primary, state.redis_password)
    nodes = []
    for node in state.redis_nodes:
        answering = node.alive() and not node.frozen()
        info = node_info(node, state.redis_password) if answering else NodeInfo(role=None)
        row = entry(node, info.role is not None)
        row["role"] = {"master": "primary", "slave": "replica"}.get(info.role or "", "down")
        if info.role == "slave":
            row["replica_of"] = info.primary_port
            row["replica_of_address"] = info.primary_address
            row["link_up"] = info.link_up
            link = links.get(node.endpoint)
            row["in_sync"] = bool(link and link.in_sync)
            row["lag_seconds"] = link.lag_seconds if link else None
            row["behind_bytes"] = link.behind_bytes if link else None
        nodes.append(row)
    sentinels = []
    for sentinel in state.sentinels:
        answering = sentinel.alive() and not sentinel.frozen()
        health = sentinel_health(sentinel, state.redis_password) if answering else {"ok": False}
        row = entry(sentinel, health.pop("ok"))
        row.update(health)
        sentinels.append(row)
    return {
        "mode": "ha",
        "name": "redis",
        "service": SERVICE,
        "url": sentinel_url(state.sentinels),  # without the password: status is for anyone
        "primary": primary.name if primary else None,
        "replicas_in_sync": sum(1 for link in links.values() if link.in_sync),
        "writes_need": MIN_REPLICAS_TO_WRITE,
        "alive": any(n["alive"] for n in nodes),
        "ready": primary is not None and any(n["ready"] for n in nodes),
        "nodes": nodes,
        "sentinels": sentinels,
    }


def _replica_links(primary: Proc | None, password: str) -> dict[str, replication.ReplicaLink]:
    """The primary's replicas by address:port (a Proc's endpoint), as it sees
    them (empty if it does not answer)."""
    if primary is None or not primary.alive() or primary.frozen():
        return {}
    try:
        with _client(primary, password) as client:
            return {link.address: link for link in replication.read_replication(client).replicas}
    except redis.RedisError:
        return {}
