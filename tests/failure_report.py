"""What a failed test's report shows of the servers it ran, so that a CI failure
can be diagnosed from its output alone.

A fixture value with a ``diagnostics() -> str`` method (the launcher's
`Launcher`, docker's `Compose` and `PrivateDocker`) is asked for it when a test
that uses it fails (conftest's ``pytest_runtest_makereport``); the text is a
section of the failure's report. It is taken at the failure, before the
fixture puts the cluster back. Every probe here has a short timeout and none
raises: a report of a broken cluster must not break in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import redis

from shop.cluster import ha
from shop.cluster.state import State

# Short: a report is read by a person, and Sentinel's story of a failover
# (sdown, odown, vote, promotion, reconfiguration) fits in about 30 lines.
LOG_LINES = 30
PROBE_TIMEOUT = 2.0  # seconds per question to a node or Sentinel; a live one answers in ms

# What INFO replication says that explains a replication problem.
REPLICATION_FIELDS = (
    "role",
    "master_host",
    "master_port",
    "master_link_status",
    "master_last_io_seconds_ago",
    "master_sync_in_progress",
    "connected_slaves",
    "master_repl_offset",
    "slave_repl_offset",
    "min_slaves_good_slaves",
)
# What Sentinel says of the primary and of each replica.
SENTINEL_FIELDS = ("ip", "port", "flags", "num-slaves", "num-other-sentinels", "config-epoch")
SENTINEL_REPLICA_FIELDS = (
    "ip",
    "port",
    "flags",
    "master-link-status",
    "master-host",
    "master-port",
)


def tail(path: Path, lines: int = LOG_LINES) -> str:
    """The last `lines` lines of a log, or why there are none."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def logs(paths: Iterable[Path], lines: int = LOG_LINES) -> str:
    """Each log's tail under its path."""
    return "\n".join(f"--- {path} (last {lines} lines)\n{tail(path, lines)}" for path in paths)


def section(title: str, body: Callable[[], str]) -> str:
    """`title` and what `body` returns, or the error that stopped it."""
    try:
        text = body()
    except Exception as exc:  # noqa: BLE001 - a report never fails on a broken cluster
        text = f"(could not collect: {exc!r})"
    return f"=== {title}\n{text}"


def _client(host: str, port: int, password: str) -> redis.Redis:
    return redis.Redis(
        host=host,
        port=port,
        password=password or None,
        socket_timeout=PROBE_TIMEOUT,
        socket_connect_timeout=PROBE_TIMEOUT,
        decode_responses=True,
    )


def replication(host: str, port: int, password: str) -> str:
    """One node's INFO replication, the fields that matter, on one line."""
    try:
        with _client(host, port, password) as node:
            info = node.info("replication")
    except redis.RedisError as exc:
        return f"{host}:{port} does not answer: {exc}"
    fields = [f"{key}={info[key]}" for key in REPLICATION_FIELDS if key in info]
    replicas = [
        f"slave{n}={info[f'slave{n}']}" for n in range(int(info.get("connected_slaves", 0)))
    ]
    return f"{host}:{port} " + " ".join(fields + replicas)


def sentinel_view(host: str, port: int, password: str, service: str) -> str:
    """What one Sentinel says of the primary and its replicas."""
    try:
        with _client(host, port, password) as sentinel:
            primary = sentinel.sentinel_master(service)
            replicas = sentinel.sentinel_slaves(service)
    except redis.RedisError as exc:
        return f"sentinel {host}:{port} does not answer: {exc}"
    lines = [f"sentinel {host}:{port} primary: " + _fields(primary, SENTINEL_FIELDS)]
    lines += [f"    replica: {_fields(r, SENTINEL_REPLICA_FIELDS)}" for r in replicas]
    return "\n".join(lines)


def _fields(values: dict, names: tuple[str, ...]) -> str:
    return " ".join(f"{name}={values[name]}" for name in names if name in values)


def ha_store(state: State) -> str:
    """Each node's replication as it says itself, then each Sentinel's view."""
    password = state.redis_password
    nodes = [f"{n.name}: {replication(n.address, n.port, password)}" for n in state.redis_nodes]
    sentinels = [
        f"{s.name}: {sentinel_view(s.address, s.port, password, ha.SERVICE)}"
        for s in state.sentinels
    ]
    return "\n".join(nodes + sentinels)
