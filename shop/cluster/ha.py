"""Redis high availability for the local cluster: a primary, a replica, three Sentinels.

Kept apart from launcher.py so the single-Redis path stays as it was; the
launcher calls these helpers when the cluster runs with ``--redis ha``.

Sentinel decides who is primary, not us: after the first start every
question "which node is primary now?" is asked of the Sentinels
(SENTINEL GET-MASTER-ADDR-BY-NAME), and a node that comes back is started as a
replica of whatever they name, which is also what Sentinel itself would make
of it a moment later.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from . import procs

SERVICE = "shop"
QUORUM = 2
# Small enough that a test sees a failover in a few seconds; a production
# setup would pick more (a GC pause or a slow disk must not trigger one).
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 4000
NODE_PREFIX = "redis-"
SENTINEL_PREFIX = "sentinel-"
PRIMARY_ALIAS = "redis-primary"
SENTINELS = 3

# Every node, primary or not: one full sync at once (no 5 s batching wait),
# and the replica keeps serving reads of its last data while it resyncs.
NODE_SETTINGS = {"repl-diskless-sync-delay": "0"}


def sentinel_url(ports: list[int], service: str = SERVICE) -> str:
    """The ``redis+sentinel://`` URL the shop replicas get (sessionstore reads it)."""
    hosts = ",".join(f"{procs.LOOPBACK}:{port}" for port in ports)
    return f"redis+sentinel://{hosts}/{service}/0"


def sentinel_conf(*, port: int, folder: Path, primary_port: int) -> str:
    """A sentinel.conf for loopback. Sentinel rewrites this file as it learns the
    topology (replicas, other Sentinels, epochs), so it must stay writable."""
    return "".join(
        f"{line}\n"
        for line in (
            f"port {port}",
            f"bind {procs.LOOPBACK}",
            "daemonize no",
            f"dir {folder}",
            f"pidfile {folder / 'sentinel.pid'}",
            'logfile ""',
            f"sentinel monitor {SERVICE} {procs.LOOPBACK} {primary_port} {QUORUM}",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1",
        )
    )


def start_sentinel(
    folder: Path, port: int, primary_port: int, *, fresh: bool, timeout: float = 15.0
) -> subprocess.Popen:
    """Start one Sentinel (``redis-server CONF --sentinel``) with its files in `folder`.

    `fresh` writes a new config; a restarted Sentinel keeps the one it rewrote,
    so it remembers the current primary and epoch instead of the first one.
    """
    binary = procs.find_binary("redis-server")
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "sentinel.conf"
    if fresh or not conf.exists():
        conf.write_text(sentinel_conf(port=port, folder=folder, primary_port=primary_port))
    log = folder / "sentinel.log"
    proc = procs.spawn([binary, str(conf), "--sentinel"], log_path=log)
    procs.wait_until(
        lambda: proc.poll() is None and procs._redis_ping(port),
        timeout=timeout,
        what=f"sentinel on port {port} (log: {log})",
    )
    return proc


def _client(port: int, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis(
        host=procs.LOOPBACK,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    )


def primary_port(sentinel_ports: list[int]) -> int | None:
    """The port of the primary as the first answering Sentinel names it (None: none answers)."""
    for port in sentinel_ports:
        try:
            with _client(port) as sentinel:
                addr = sentinel.sentinel_get_master_addr_by_name(SERVICE)
        except redis.RedisError:
            continue
        if addr:
            return int(addr[1])
    return None


@dataclass(frozen=True)
class NodeInfo:
    """One Redis node as INFO replication reports it."""

    role: str | None  # "master", "slave", or None when it does not answer
    primary_port: int | None = None  # a replica's primary
    link_up: bool = False  # a replica's link to it
    replicas: int = 0  # a primary's connected replicas


def node_info(port: int) -> NodeInfo:
    """The role of the node on `port` (ROLE is what Sentinel itself relies on)."""
    try:
        with _client(port) as node:
            info = node.info("replication")
    except redis.RedisError:
        return NodeInfo(role=None)
    if info.get("role") == "slave":
        return NodeInfo(
            role="slave",
            primary_port=int(info.get("master_port", 0)) or None,
            link_up=info.get("master_link_status") == "up",
        )
    return NodeInfo(role=info.get("role"), replicas=int(info.get("connected_slaves", 0)))


def sentinel_health(port: int) -> dict[str, Any]:
    """What one Sentinel says: its view of the primary, replicas and peer Sentinels."""
    try:
        with _client(port) as sentinel:
            master = sentinel.sentinel_master(SERVICE)
    except redis.RedisError:
        return {"ok": False}
    return {
        "ok": True,
        "primary_port": int(master.get("port", 0)) or None,
        "primary_ok": not any(f in master.get("flags", "") for f in ("s_down", "o_down")),
        "replicas": int(master.get("num-slaves", 0)),
        "other_sentinels": int(master.get("num-other-sentinels", 0)),
        "quorum": int(master.get("quorum", 0)),
    }
