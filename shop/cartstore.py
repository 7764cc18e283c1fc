"""Where carts live: the one interface the cart and order modules write through.

shop/cart.py and shop/orders.py build every cart change as a call of one of
the cart scripts of ``shop/lua/`` (``cart_add``, ``cart_set``, ``cart_merge``,
``checkout``: their headers are the contract, KEYS and ARGV) and read a cart
as the quantities of its key, or as its lines with their products. A
:class:`CartStore` carries those calls out:

- :class:`RedisCarts` (the default, ``SHOP_STATE=redis``): the scripts run in
  the shared Redis, atomic across replicas, through :func:`shop.atomic.run`.
- ``ReplicaMemoryCarts`` (``SHOP_STATE=memory``, in shop/replicamemory.py): the
  same contract on a dict in the replica's own process, the demonstration of
  what the project replaces.

So the rules of the shop (validation, limits, error messages, what a cart
shows) are written once, in cart.py and orders.py, whichever store holds them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from sessionstore import LuaScript, run_script

from . import atomic, catalog, keys

if TYPE_CHECKING:
    from .catalog import Product
    from .idempotency import IdempotencyClaim
    from .shopstore import ShopStore


class CartStore(Protocol):
    """Runs the cart scripts by name and reads a cart's quantities."""

    def run(
        self,
        store: ShopStore,
        name: str,
        keys: list[str],
        args: list[Any],
        claim: IdempotencyClaim | None = None,
    ) -> atomic.Outcome:
        """Apply cart script `name` (its KEYS and ARGV as its Lua header says)."""
        ...

    def quantities(self, store: ShopStore, cart_key: str) -> dict[str, int | str]:
        """Product id -> qty of the cart at `cart_key` (empty if there is none)."""
        ...

    def lines(self, store: ShopStore, cart_key: str) -> list[tuple[Product, int]]:
        """(product as the catalog has it now, qty) per line of the cart at
        `cart_key`, in no order; a line whose product left the catalog is left out."""
        ...


class RedisCarts:
    """Carts in the shared Redis: a hash per owner, changed only by Lua scripts."""

    def run(
        self,
        store: ShopStore,
        name: str,
        keys: list[str],
        args: list[Any],
        claim: IdempotencyClaim | None = None,
    ) -> atomic.Outcome:
        return atomic.run(store, name, keys, args, claim)

    def quantities(self, store: ShopStore, cart_key: str) -> dict[str, int | str]:
        return store.client.hgetall(cart_key)

    def lines(self, store: ShopStore, cart_key: str) -> list[tuple[Product, int]]:
        # One round trip for the cart and its products (a read: no envelope).
        rows = run_script(
            store.client, CART_VIEW, [cart_key, keys.products(), keys.stock()], []
        )
        return [
            (catalog.product_from_json(info, stock), int(qty))
            for _pid, qty, info, stock in rows
            if info
        ]


CART_VIEW = LuaScript.load("shop", "cart_view")


REDIS_CARTS = RedisCarts()
