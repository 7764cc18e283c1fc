"""`shop-cluster status`: what runs where, and whether each process answers.

`collect` probes every process of a running cluster and returns what
`status --json` prints (`output.status_table` draws the same data as a table):

    {"url", "workdir", "redis": {...}, "nginx": {...},
     "replicas": [{"name", "pid", "port", "alive", "ready", "frozen", "in_rotation", ...}],
     "watchdogs": [{"name", "pid", "alive", "ready", "frozen", "nginx", "out",
                    "note", "decisions", ...}],
     "autoscale": {"enabled", "policy", "process", "reading", "decisions"}}

and in hosts mode (`up --hosts`), where `url` is the virtual IP's:

    "hosts": [{"name", "address", "up", "vip", "processes"}],
    "balancers": [{nginx-1 ..., "keepalived": {...}}, {nginx-2 ...}]

Every probe has a short timeout and a dead process is simply "not ready":
status never hangs on a broken cluster and never raises for one. A frozen
process (`shop-cluster freeze`) is alive but "frozen" and never ready, and is
not probed at all: it could not answer. `in_rotation` says whether every nginx
sends the replica requests (the watchdogs' verdicts, as the configs say now);
a watchdog is ready while it keeps writing its status.
"""

from __future__ import annotations

from typing import Any

import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from shop import scalelog  # Redis only, like shop.heartbeat

from . import appserver, hosts, nginxconf, procs, store, watchdog
from .state import Proc, State, Workdir


def entry(proc: Proc, ready: bool) -> dict[str, Any]:
    """The fields every process has in `status --json`."""
    frozen = proc.frozen()
    return {
        "name": proc.name,
        "pid": proc.pid,
        "port": proc.port,
        "address": proc.address,
        "alive": proc.alive(),
        "ready": ready and not frozen,
        "frozen": frozen,
    }


def collect(workdir: Workdir, state: State) -> dict[str, Any]:
    """What `status --json` prints: each process, whether it runs and answers."""
    data = store.data_node(state)
    password = state.redis_password
    readable = bool(data and procs.redis_ping(data.port, data.address, password))
    beats = heartbeats(data, password) if readable else {}
    record = autoscale_record(data if readable else None, password)
    balancers = [balancer(nginx) for nginx in state.balancers()]
    specs = {nginx.name: nginxconf.saved(workdir, nginx) for nginx in state.balancers()}
    out = {name for spec in specs.values() if spec for name in spec.out}
    rows = []
    for replica in state.replicas:
        row = entry(replica, appserver.is_ready(replica))
        row["in_rotation"] = replica.name not in out
        beat = beats.get(replica.name)
        # From the replica's heartbeats in Redis (shop/heartbeat.py).
        row["heartbeat"] = bool(beat and beat.alive)
        row["requests"] = beat.requests_total if beat else None
        row["requests_last_minute"] = beat.requests_last_minute if beat else None
        rows.append(row)
    data = {
        "url": state.url,
        "workdir": str(workdir),
        "redis": store.status(state, entry),
        "nginx": balancers[0],
        "replicas": rows,
        "autoscale": autoscale(state, record),
        "watchdogs": [watchdog_entry(state, proc, specs) for proc in state.watchdogs],
    }
    if state.network is not None:
        data["hosts"] = hosts.status(state)
        data["balancers"] = balancers
        for row, vrrp in zip(balancers, state.keepalived, strict=True):
            row["keepalived"] = entry(vrrp, vrrp.alive())
    return data


def watchdog_entry(
    state: State, proc: Proc, specs: dict[str, nginxconf.Balancer | None]
) -> dict[str, Any]:
    """A watchdog in `status --json`: whether it runs and keeps up, what it has
    taken out of its nginx's rotation and its last decisions."""
    nginx = watchdog.watched(state, proc)
    spec = specs.get(nginx.name)
    report = (watchdog.read_status(spec) if spec else None) or {}
    row = entry(proc, watchdog.is_fresh(report, proc))
    row.update(
        port=None,
        nginx=nginx.name,
        out=list(spec.out) if spec else [],
        note=report.get("note", ""),
        reloads=report.get("reloads", 0),
        decisions=report.get("decisions", [])[-5:],
    )
    return row


def answering(proc: Proc) -> bool:
    """Whether `proc` runs and is not frozen: only then is it worth a probe."""
    return proc.alive() and not proc.frozen()


def balancer(nginx: Proc) -> dict[str, Any]:
    """One nginx in `status --json`, with its counters when it answers."""
    ready = answering(nginx) and procs.http_ok(nginxconf.url(nginx, nginxconf.HEALTH_PATH))
    row = entry(nginx, ready)
    if ready:
        row.update(stub_status(nginxconf.url(nginx, nginxconf.STATUS_PATH)))
    return row


def autoscale(state: State, record: dict[str, Any]) -> dict[str, Any]:
    """The autoscaler in `status --json`: its range (`policy`, None when off), its
    process, what it reads now and its latest decisions, newest first (these
    stay after `autoscale off`: who scaled the cluster, and why)."""
    proc, reading = state.autoscaler, record["reading"]
    current = bool(proc and reading and reading.get("pid") == proc.pid)
    return {
        "enabled": state.autoscale is not None,
        "policy": state.autoscale.to_dict() if state.autoscale else None,
        "process": None if proc is None else entry(proc, proc.alive() and current),
        "reading": reading if current else None,
        "decisions": record["decisions"],
    }


def _redis(node: Proc, password: str) -> redis.Redis:
    """A client of Redis `node`; `password` is the cluster's ("" for none)."""
    return redis.Redis(
        host=node.address,
        port=node.port,
        password=password or None,
        socket_timeout=2,
        retry=Retry(NoBackoff(), 0),  # redis-py's default retries a hung Redis 10 times
        decode_responses=True,
    )


def heartbeats(node: Proc, password: str) -> dict[str, Any]:
    """The replicas' heartbeats by name, read from Redis `node` (empty if it cannot be read)."""
    from shop import heartbeat  # Redis only, no Flask app: the launcher still never runs the app

    client = _redis(node, password)
    try:
        return {view.name: view for view in heartbeat.read_cluster(client)}
    except redis.RedisError:
        return {}
    finally:
        client.close()


def cluster_autoscale_record(state: State) -> dict[str, Any]:
    """The autoscaler's record of `state`'s cluster, from the node that holds its
    data now, with the cluster's password (for the launcher, the demo, the tests)."""
    return autoscale_record(store.data_node(state), state.redis_password)


def autoscale_record(node: Proc | None, password: str) -> dict[str, Any]:
    """The autoscaler's reading and latest decisions from Redis `node`
    (shop/scalelog.py); none of either if it cannot be read."""
    if node is None:
        return {"reading": None, "decisions": []}
    client = _redis(node, password)
    try:
        return scalelog.read(client)
    except redis.RedisError:
        return {"reading": None, "decisions": []}
    finally:
        client.close()


def stub_status(url: str, timeout: float = 2.0) -> dict[str, int]:
    """nginx's stub_status as numbers: active connections, connections and requests
    handled, and `in_flight`: requests nginx has read and not yet answered (its
    "Writing", which counts this very request too, less one). Empty if it does not answer."""
    try:
        lines = requests.get(url, timeout=timeout).text.splitlines()
        _accepted, handled, total = (int(n) for n in lines[2].split())
        active = int(lines[0].rsplit(":", 1)[1])
        states = lines[3].split()  # Reading: R Writing: W Waiting: K
        writing = int(states[states.index("Writing:") + 1])
    except (requests.RequestException, IndexError, ValueError):
        return {}
    return {
        "active_connections": active,
        "connections": handled,
        "requests": total,
        "in_flight": max(0, writing - 1),
    }
