"""The live cluster page (/cluster) and its JSON (/api/cluster), from the heartbeats.

Any replica can draw the whole cluster, because every worker's heartbeat is in
the shared Redis (shop/heartbeat.py). The page names the replica that served
it; static/cluster.js re-fetches /api/cluster every 2 s and redraws the table,
and without script a <noscript> meta refresh reloads the whole page instead
(it is ignored when script runs, so the two never fight).
"""

from __future__ import annotations

import atexit
import time
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, render_template

import sessionstore

from . import heartbeat, metrics, shopper
from .formatting import duration

bp = Blueprint("cluster", __name__)
bp.add_app_template_filter(duration, "duration")  # as static/cluster.js writes them

REFRESH_SECONDS = 2


def cluster_status() -> dict[str, Any]:
    """What /api/cluster returns: who served this, and every replica seen recently."""
    now = time.time()
    replicas = heartbeat.read_cluster(shopper.store(), now)
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


def start_heartbeat(app: Flask) -> heartbeat.Heartbeat | None:
    """Start this worker's heartbeat thread (once gunicorn has forked the worker).

    It gets its own Redis client, counted apart in the metrics (client
    "heartbeat"), so request latency metrics show request work only. Returns
    None when ``SHOP_HEARTBEAT_INTERVAL`` is 0.
    """
    interval = float(app.config["HEARTBEAT_INTERVAL"])
    if interval <= 0:
        return None
    client = metrics.instrument_redis(
        sessionstore.redis_from_url(app.config["REDIS_URL"], decode_responses=True), "heartbeat"
    )
    observer: metrics.RequestObserver = app.extensions["shop.observer"]
    beat = heartbeat.Heartbeat(
        client,
        app.config["REPLICA_NAME"],
        lambda: observer.served,
        started=app.config["REPLICA_STARTED"],
        interval=interval,
    ).start()
    atexit.register(beat.stop)  # a graceful worker exit is "gone" at once, not after the TTL
    return beat
