"""The shop: a Flask app whose every piece of state lives in Redis.

``create_app(config)`` builds an app from environment variables (see
shop/config.py) with `config` overriding them; ``shop.wsgi:app`` is what
gunicorn serves. Any number of replicas can serve any user, because sessions,
carts, stock, users and orders are all in the shared Redis (unless
``SHOP_STATE=memory``, the demonstration of the alternative: shop/replicamemory.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the shop app; `config` entries override the environment's settings."""
    # Imported here, not at the top: gunicorn imports shop.gunicorn_conf, and so
    # this package, in its master before that file sets PROMETHEUS_MULTIPROC_DIR.
    # prometheus_client fixes its mode when first imported, so nothing that
    # imports it (shop.metrics, via the blueprints) may load before the workers.
    import logging
    from dataclasses import replace
    from datetime import timedelta

    from flask import Flask

    import sessionstore

    from . import (
        api,
        appstate,
        clusterview,
        csrf,
        handlers,
        health,
        identity,
        metrics,
        replicamemory,
        web,
    )
    from .config import STATE_MEMORY, load_config
    from .proxy import TrustedProxyFix
    from .shopstore import ShopStore

    app = Flask(__name__)
    app.config.update(load_config(overrides=config))
    settings = app.config
    app.secret_key = settings["SECRET_KEY"]
    app.json.sort_keys = False

    # Two clients on one Redis: sessionstore's reads bytes, the shop's decodes
    # to text. Each times its round trips under its own label (shop.metrics):
    # the session store through its observer, the shop's client as a TimedRedis.
    url = settings["REDIS_URL"]
    idle = timedelta(seconds=settings["SESSION_IDLE_TIMEOUT"])
    absolute = timedelta(seconds=settings["SESSION_ABSOLUTE_TIMEOUT"])
    # A WAIT for a replica's acknowledgement blocks in Redis: the socket must outlast it.
    timeout = sessionstore.socket_timeout_for(
        max(settings["SHOP_REPLICA_ACK_TIMEOUT"], settings["SESSION_REPLICA_ACK_TIMEOUT"])
    )
    app.session_interface = sessionstore.RedisSessionInterface(
        sessionstore.redis_from_url(url, socket_timeout=timeout),
        idle_timeout=idle,
        absolute_timeout=absolute,
        user_key=identity.USER_ID,
        durability=sessionstore.Durability(
            settings["SESSION_REPLICA_ACKS"],
            timedelta(seconds=settings["SESSION_REPLICA_ACK_TIMEOUT"]),
        ),
        observer=metrics.SessionMetrics(),
    )
    shop_store = ShopStore(
        sessionstore.redis_from_url(
            url,
            socket_timeout=timeout,
            decode_responses=True,
            redis_class=metrics.timed_redis("shop"),
        ),
        durability=sessionstore.Durability(
            settings["SHOP_REPLICA_ACKS"], timedelta(seconds=settings["SHOP_REPLICA_ACK_TIMEOUT"])
        ),
        observer=metrics.ScriptMetrics(),
    )
    if settings["SHOP_STATE"] == STATE_MEMORY:
        # The demonstration of what the shared store replaces (shop/replicamemory.py).
        logging.getLogger(__name__).warning(replicamemory.STARTUP_WARNING)
        app.session_interface = replicamemory.MemorySessionInterface(
            idle_timeout=idle, absolute_timeout=absolute
        )
        shop_store = replace(shop_store, carts=replicamemory.ReplicaMemoryCarts())

    csrf.init_app(app)  # the forms; the API only accepts application/json, which forms cannot send
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(web.bp)
    app.register_blueprint(clusterview.bp)
    app.register_blueprint(metrics.bp)
    handlers.init_app(app)
    web.init_app(app)
    appstate.init_app(app, shop_store)  # last: seeds the catalog, now or on a later request
    observer = metrics.RequestObserver(
        TrustedProxyFix(app.wsgi_app, settings["TRUSTED_PROXIES"]), settings["REPLICA_NAME"]
    )
    app.extensions["shop.observer"] = observer
    app.wsgi_app = observer
    return app
