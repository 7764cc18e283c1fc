"""The shop's handle on Redis: one client, and how durable its writes must be.

Every domain module (accounts, cart, catalog, orders, throttle) takes a
:class:`ShopStore` as its first argument: reads use ``store.client``; every
change goes through :func:`shop.atomic.run`, which waits for
``store.durability`` replicas. create_app (shop/__init__.py) builds one per
app and a request reaches it with :func:`shop.appstate.store`. Nothing here
imports Flask, so the domain modules stay plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from sessionstore import NO_WAIT, Durability


@dataclass(frozen=True)
class ShopStore:
    """The shop's Redis client (it decodes responses: every value is text) and
    the replica acknowledgements every domain write waits for."""

    client: redis.Redis
    durability: Durability = NO_WAIT
