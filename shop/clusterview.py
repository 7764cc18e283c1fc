"""The live cluster page (/cluster) and its JSON (/api/cluster), from the heartbeats
and the autoscaler's record (shop/scalelog.py).

Anyone sees each replica's name and whether it is alive; process details
(pids, uptime, request counts) and the autoscaler's readings and decisions
(they tell the load) only a client on the cluster's own host, or every client
where SHOP_CLUSTER_DETAILS=1 says so (see `shows_details`).

Any replica can draw the whole cluster, because every worker's heartbeat is in
the shared Redis (shop/heartbeat.py). The page names the replica that served
it; static/cluster.js re-fetches /api/cluster every 2 s and redraws the table,
and without script a <noscript> meta refresh reloads the whole page instead
(it is ignored when script runs, so the two never fight).

Below the replicas, the store: which Redis node takes the writes now and which
of its replicas are in sync (shop/replication.py), and whether writes are
accepted (a write needs SHOP_REPLICA_ACKS / SESSION_REPLICA_ACKS replicas).
It is a separate key of the JSON (``store``) and a separate part of the page,
shown with the process details only (it names the store's addresses).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template

from . import appstate, heartbeat, identity, replication, scalelog
from .formatting import duration

bp = Blueprint("cluster", __name__)
bp.add_app_template_filter(duration, "duration")  # as static/cluster.js writes them

REFRESH_SECONDS = 2


# What anyone may see of a replica: that it exists and whether it is alive.
PUBLIC_FIELDS = ("name", "alive")


def shows_details() -> bool:
    """Whether this client may see process details (pids, uptime, request counts).

    A stranger learns nothing useful from them but the shape of the cluster and
    its load; the cluster's own host (the developer's browser, `shop-cluster
    status`) or a deployment that says so (SHOP_CLUSTER_DETAILS=1) sees them.
    """
    if current_app.config["CLUSTER_DETAILS"]:
        return True
    try:
        return ipaddress.ip_address(identity.client_address()).is_loopback
    except ValueError:
        return False


def cluster_status() -> dict[str, Any]:
    """What /api/cluster returns: who served this, every replica seen recently, and
    (with details) the autoscaler's reading and latest decisions."""
    now = time.time()
    client = appstate.store().client
    replicas = heartbeat.read_cluster(client, now)
    details = shows_details()
    rows = [r.to_json() for r in replicas]
    if not details:
        rows = [{field: row[field] for field in PUBLIC_FIELDS} for row in rows]
    return {
        "served_by": current_app.config["REPLICA_NAME"],
        "generated_at": round(now, 3),
        "refresh_seconds": REFRESH_SECONDS,
        "alive": sum(1 for r in replicas if r.alive),
        "details": details,
        "replicas": rows,
        "autoscale": scalelog.read(client) if details else None,
        # The store names its nodes' addresses: a detail, like the pids.
        **({"store": store_status()} if details else {}),
    }


def store_status() -> dict[str, Any]:
    """The Redis node the shop writes to now and its replicas, in sync or not.

    While fewer replicas are in sync than a write needs, writes get a 503, the
    replicas' heartbeats included: the page says so, since replicas then
    lapse to "gone" while they still serve.
    """
    config = current_app.config
    needed = max(config["SHOP_REPLICA_ACKS"], config["SESSION_REPLICA_ACKS"])
    view = replication.read_replication(appstate.store().client).to_json()
    view["writes_need"] = needed
    view["writes_accepted"] = view["role"] == "primary" and view["replicas_in_sync"] >= needed
    return view


@bp.get("/api/cluster")
def api_cluster():
    return jsonify(cluster_status())


@bp.get("/cluster")
def cluster_page():
    return render_template("cluster.html", cluster=cluster_status())
