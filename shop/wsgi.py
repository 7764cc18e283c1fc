"""The WSGI entry point: ``gunicorn -c shop/gunicorn_conf.py shop.wsgi:app``.

gunicorn imports this module in each worker it forks (the app is not
preloaded), so what happens here happens once per worker: logging, the app,
and the worker's heartbeat thread. Settings come from the environment (see
shop/config.py).
"""

from __future__ import annotations

import atexit

from flask import Flask

import sessionstore

from . import create_app, heartbeat, metrics
from .logs import configure_logging


def start_heartbeat(app: Flask) -> heartbeat.Heartbeat | None:
    """Start this worker's heartbeat thread; None when ``SHOP_HEARTBEAT_INTERVAL`` is 0.

    Here, not in create_app: a thread must start in the worker gunicorn forked,
    and the many apps tests build must not each beat into the test Redis. It
    gets its own Redis client, counted apart in the metrics (client
    "heartbeat"), so request latency metrics show request work only.
    """
    interval = float(app.config["HEARTBEAT_INTERVAL"])
    if interval <= 0:
        return None
    client = sessionstore.redis_from_url(
        app.config["REDIS_URL"], decode_responses=True, redis_class=metrics.timed_redis("heartbeat")
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


configure_logging()
app = create_app()
start_heartbeat(app)
