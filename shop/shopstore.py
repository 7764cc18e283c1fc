"""The shop's handle on Redis: one client, how durable its writes must be, and
who hears what its scripts did.

Every domain module (accounts, cart, catalog, orders, throttle) takes a
:class:`ShopStore` as its first argument: reads use ``store.client``; every
change goes through :func:`shop.atomic.run`, which waits for
``store.durability`` replicas and then tells ``store.observer``. create_app
(shop/__init__.py) builds one per app (with shop.metrics' observer) and a
request reaches it with :func:`shop.appstate.store`. The domain modules import
neither Flask's request machinery nor the metrics: they get all of it here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from sessionstore import NO_WAIT, Durability

if TYPE_CHECKING:
    from .cartstore import CartStore


class ScriptObserver:
    """What shop.atomic.run reports after each script: subclass it to count or
    audit (shop.metrics.ScriptMetrics does). Here the methods do nothing; they
    run in the request's thread, so keep them cheap."""

    def script_ran(self, name: str, result: dict[str, Any], replayed: bool) -> None:
        """Script `name` returned `result`, or `replayed` a stored first result."""

    def not_replicated(self, name: str) -> None:
        """Script `name` wrote, but too few replicas confirmed it in time (a 503)."""


def _redis_carts() -> CartStore:
    from .cartstore import REDIS_CARTS  # cartstore runs atomic, which imports this module

    return REDIS_CARTS


@dataclass(frozen=True)
class ShopStore:
    """The shop's Redis client (it decodes responses: every value is text), the
    replica acknowledgements every domain write waits for, its observer, and
    where carts live (shop/cartstore.py: Redis, unless ``SHOP_STATE=memory``)."""

    client: redis.Redis
    durability: Durability = NO_WAIT
    observer: ScriptObserver = ScriptObserver()
    carts: CartStore = field(default_factory=_redis_carts)
