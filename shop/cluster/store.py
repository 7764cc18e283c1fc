"""The cluster's Redis, in either mode: one redis-server, or the HA nodes and
Sentinels of `ha.py`.

The launcher asks this module, not the mode, where the store is: the URL the
replicas get, the node that holds the data right now, how to (re)start a store
process and what `status` says about the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import ha, procs
from .procs import ClusterError
from .state import Proc, State, Workdir

MODES = ("single", "ha")


def plan(state: State, mode: str, redis_replicas: int) -> None:
    """Give a new cluster's `state` its store processes, each on a free port."""
    if mode == "ha":
        state.redis, (state.redis_nodes, state.sentinels) = None, ha.plan(redis_replicas)
    else:
        state.redis = Proc("redis", procs.free_port())


def start(workdir: Workdir, state: State) -> None:
    """Start the whole store of a new cluster; return once it answers."""
    if state.ha:
        ha.start(workdir, state)
    else:
        restart(workdir, state, state.redis)


def restart(workdir: Workdir, state: State, proc: Proc) -> None:
    """Start one store process again (`start NAME`), on its port, with its data."""
    if proc is state.redis:
        # The redis-server config of the whole project: AOF, fsync every second.
        popen = procs.start_redis(
            workdir.redis_dir,
            proc.port,
            timeout=procs.READY_TIMEOUT,
            address=proc.address,
            netns=proc.netns,
            password=state.redis_password,
        )
        proc.record(popen)
    else:
        ha.restart(workdir, state, proc)


def resolve(state: State, name: str) -> Proc:
    """`name`, or the node that is primary now for ``redis-primary`` (HA only)."""
    if name != ha.PRIMARY_ALIAS:
        return state.find(name)
    if not state.ha:
        raise ClusterError(f"{name} exists only in HA mode (`up --redis ha`); try `redis`")
    primary = ha.current_primary(state)
    if primary is None:
        raise ClusterError("no Sentinel names a primary right now")
    return primary


def url(state: State) -> str:
    """The REDIS_URL the shop replicas get: the single Redis, or the Sentinels,
    with the cluster's password (in the replicas' environment, which only their
    own user can read, never on a command line)."""
    if state.ha:
        return ha.sentinel_url(state.sentinels, password=state.redis_password)
    auth = f":{state.redis_password}@" if state.redis_password else ""
    return f"redis://{auth}{state.redis.endpoint}/0"


def replica_settings(state: State) -> dict[str, str]:
    """Defaults the store asks of every replica's environment (HA: replica acks)."""
    return dict(ha.DEFAULT_ACKS) if state.ha else {}


def data_node(state: State) -> Proc | None:
    """Where to read cluster data (heartbeats) right now; None if no primary is known."""
    if not state.ha:
        return state.redis
    return ha.current_primary(state)


def status(state: State, entry: Callable[[Proc, bool], dict[str, Any]]) -> dict[str, Any]:
    """The store's part of `status --json`."""
    if state.ha:
        return ha.status(state, entry)
    redis = state.redis
    answering = redis.alive() and not redis.frozen()
    return entry(
        redis, answering and procs.redis_ping(redis.port, redis.address, state.redis_password)
    )
