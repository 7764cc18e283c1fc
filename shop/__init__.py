"""The shop: a Flask app whose every piece of state lives in Redis.

``create_app(config)`` builds an app from environment variables (see
shop/config.py) with `config` overriding them; ``shop.wsgi:app`` is what
gunicorn serves. Any number of replicas can serve any user, because sessions,
carts, stock, users and orders are all in the shared Redis.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the shop app; `config` entries override the environment's settings."""
    # Imported here, not at the top: gunicorn imports shop.gunicorn_conf, and so
    # this package, in its master before that file sets PROMETHEUS_MULTIPROC_DIR.
    # prometheus_client fixes its mode when first imported, so nothing that
    # imports it (shop.metrics, via the blueprints) may load before the workers.
    from flask import Flask
    from flask_wtf.csrf import CSRFProtect

    import sessionstore

    from . import api, clusterview, handlers, health, metrics, web
    from .config import load_config
    from .errors import STORE_ERRORS
    from .proxy import TrustedProxyFix
    from .scripts import Durability
    from .shopper import ShopState

    app = Flask(__name__)
    app.config.update(load_config(overrides=config))
    app.secret_key = app.config["SECRET_KEY"]
    app.json.sort_keys = False

    url = app.config["REDIS_URL"]
    sessions = sessionstore.init_app(app, redis_client=sessionstore.redis_from_url(url))
    metrics.instrument_redis(sessions.store.client, "sessions")
    metrics.instrument_sessions(sessions.store)
    app.extensions["shop"] = ShopState(
        redis=metrics.instrument_redis(
            sessionstore.redis_from_url(url, decode_responses=True), "shop"
        ),
        durability=Durability(
            replica_acks=app.config["SHOP_REPLICA_ACKS"],
            timeout_ms=int(app.config["SHOP_REPLICA_ACK_TIMEOUT"] * 1000),
        ),
    )

    csrf = CSRFProtect(app)
    csrf.exempt(api.bp)  # the API only accepts application/json, which forms cannot send
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(web.bp)
    app.register_blueprint(clusterview.bp)
    app.register_blueprint(metrics.bp)
    handlers.init_app(app)
    web.init_app(app)
    observer = metrics.RequestObserver(
        TrustedProxyFix(app.wsgi_app, app.config["TRUSTED_PROXIES"]), app.config["REPLICA_NAME"]
    )
    app.extensions["shop.observer"] = observer
    app.wsgi_app = observer

    with app.app_context():
        try:
            handlers.seed_catalog()
        except STORE_ERRORS as exc:  # seeded by the first request once Redis is back
            log.warning("could not seed the catalog at start-up (%s); will retry", exc)
    return app
