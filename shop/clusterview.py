"""The live cluster page (/cluster) and its JSON (/api/cluster), from the heartbeats.

Any replica can draw the whole cluster, because every worker's heartbeat is in
the shared Redis (shop/heartbeat.py). The page names the replica that served
it; static/cluster.js re-fetches /api/cluster every 2 s and redraws the table,
and without script a <noscript> meta refresh reloads the whole page instead
(it is ignored when script runs, so the two never fight).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template

from . import appstate, heartbeat
from .formatting import duration

bp = Blueprint("cluster", __name__)
bp.add_app_template_filter(duration, "duration")  # as static/cluster.js writes them

REFRESH_SECONDS = 2


def cluster_status() -> dict[str, Any]:
    """What /api/cluster returns: who served this, and every replica seen recently."""
    now = time.time()
    replicas = heartbeat.read_cluster(appstate.store().client, now)
    return {
        "served_by": current_app.config["REPLICA_NAME"],
        "generated_at": round(now, 3),
        "refresh_seconds": REFRESH_SECONDS,
        "alive": sum(1 for r in replicas if r.alive),
        "replicas": [r.to_json() for r in replicas],
    }


@bp.get("/api/cluster")
def api_cluster():
    return jsonify(cluster_status())


@bp.get("/cluster")
def cluster_page():
    return render_template("cluster.html", cluster=cluster_status())
