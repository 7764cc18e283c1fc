"""Health checks for the load balancer and the launcher.

/healthz says the process runs (it touches nothing, so a Redis outage never
makes every replica look dead at once); /readyz says this replica can serve,
i.e. Redis answers a PING.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from . import appstate
from .errors import STORE_ERRORS, ShopError, store_unavailable

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok", "replica": current_app.config["REPLICA_NAME"]})


@bp.get("/readyz")
def readyz():
    try:
        appstate.store().client.ping()
    except STORE_ERRORS:
        err: ShopError = store_unavailable()
        raise err from None
    return jsonify({"status": "ready", "replica": current_app.config["REPLICA_NAME"]})
