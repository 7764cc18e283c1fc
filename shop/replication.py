"""Which Redis node is primary now and which of its replicas are in sync, as the
primary itself reports it: for the cluster page, the launcher's `status` and
the HA demo.

A replica is *in sync* when the primary sees its link up ("online") and its
last acknowledgement is at most IN_SYNC_MAX_LAG seconds old. That is what a
write's WAIT can count on, and exactly what Redis's own write guard counts
(the launcher's HA nodes run with ``min-replicas-max-lag`` = IN_SYNC_MAX_LAG):
with fewer replicas in sync than a write needs, writes get a 503.

One round trip (INFO replication and CLIENT INFO, pipelined). Through a
Sentinel client the node that answers is the primary of the moment. This
module does not import Flask: the launcher reads it too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import redis

# Replicas acknowledge the primary's stream once a second and the primary
# counts the lag in whole seconds, so a healthy replica shows 0 to 2: 3 leaves
# a second of slack for a busy machine. One that lags more is not counted on.
IN_SYNC_MAX_LAG = 3
ONLINE = "online"  # a replica's state once its initial sync is done


@dataclass(frozen=True)
class ReplicaLink:
    """One replica as its primary sees it."""

    host: str
    port: int
    state: str  # "online" once synced; wait_bgsave, send_bulk... during a full sync
    lag_seconds: int  # since its last acknowledgement
    behind_bytes: int  # of the replication stream it has not acknowledged yet

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def in_sync(self) -> bool:
        return self.state == ONLINE and self.lag_seconds <= IN_SYNC_MAX_LAG

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "address": self.address, "in_sync": self.in_sync}


@dataclass(frozen=True)
class Replication:
    """The node that answered (the primary, through Sentinel) and its replicas."""

    address: str  # host:port the client reached the node on
    role: str  # "primary", or "replica" when the client reached one
    offset: int  # bytes of replication stream the node has produced (or received)
    replicas: list[ReplicaLink] = field(default_factory=list)

    @property
    def in_sync(self) -> int:
        return sum(1 for link in self.replicas if link.in_sync)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "role": self.role,
            "offset": self.offset,
            "replicas_in_sync": self.in_sync,
            "replicas": [link.to_json() for link in self.replicas],
        }


def read_replication(client: redis.Redis) -> Replication:
    """The replication state of the node `client` talks to (one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.info("replication")
    pipe.client_info()  # its laddr: the node's address as this client reached it
    info, me = pipe.execute()
    primary = info.get("role") == "master"
    offset = int(info.get("master_repl_offset" if primary else "slave_repl_offset", 0))
    replicas = []
    for number in range(int(info.get("connected_slaves", 0)) if primary else 0):
        line = info.get(f"slave{number}")
        if not isinstance(line, dict):
            continue
        replicas.append(
            ReplicaLink(
                host=str(line.get("ip", "")),
                port=int(line.get("port", 0)),
                state=str(line.get("state", "")),
                lag_seconds=int(line.get("lag", 0)),
                behind_bytes=max(0, offset - int(line.get("offset", 0))),
            )
        )
    return Replication(
        address=_text(me.get("laddr", "")),
        role="primary" if primary else "replica",
        offset=offset,
        replicas=replicas,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
