"""What each app keeps between requests (one app per gunicorn worker process),
and how a request reaches it.

- The :class:`~shop.shopstore.ShopStore` that create_app built: :func:`store`.
- Whether this process has seeded the catalog: at start-up, or, when Redis
  was down then, before the first request that needs it (:func:`seed_catalog`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, current_app, request

from . import catalog
from .errors import is_store_error
from .shopstore import ShopStore

log = logging.getLogger(__name__)

# Requests that must work while Redis is down, so they never try to seed.
NO_SEEDING = ("health.healthz", "static", "metrics.metrics")


@dataclass
class ShopState:
    """``app.extensions["shop"]``: the app's store and start-up flags."""

    store: ShopStore
    catalog_seeded: bool = False


def state() -> ShopState:
    return current_app.extensions["shop"]


def store() -> ShopStore:
    """The current app's store (one client, shared by all threads of a worker)."""
    return state().store


def seed_catalog() -> None:
    """Add the shipped products Redis lacks, once per process (needs an app context)."""
    shop = state()
    if shop.catalog_seeded:
        return
    if current_app.config["SEED_CATALOG"]:
        catalog.seed(shop.store)
    shop.catalog_seeded = True


def _seed_before_request() -> None:
    if request.endpoint not in NO_SEEDING:
        seed_catalog()


def init_app(app: Flask, shop_store: ShopStore) -> None:
    """Keep `shop_store` on `app` and seed the catalog now, or on a later request.

    Call it after the other request hooks are registered: seeding runs last,
    so a 503 while seeding still carries the request id.
    """
    app.extensions["shop"] = ShopState(shop_store)
    app.before_request(_seed_before_request)
    with app.app_context():
        try:
            seed_catalog()
        except Exception as exc:  # seeded by the first request once Redis is back
            if not is_store_error(exc):
                raise
            log.warning("could not seed the catalog at start-up (%s); will retry", exc)
