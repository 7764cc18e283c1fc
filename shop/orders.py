"""Orders: placed by one atomic Lua script, listed newest first.

checkout.lua checks the stock of every cart line, takes it, writes the order
and clears the cart in one step, so concurrent checkouts on any number of
replicas never sell more than there is, and a failed checkout changes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sessionstore import LuaScript, run_script

from . import atomic, keys
from .cart import Owner
from .errors import ShopError
from .idempotency import IdempotencyClaim
from .shopstore import ShopStore

HISTORY_LIMIT = 50


def _short_message(short: list[dict[str, Any]]) -> str:
    parts = [
        f"{line['name']} ({line['available']} left, {line['requested']} wanted)" for line in short
    ]
    return "Not enough stock for: " + ", ".join(parts) + "."


def checkout(
    store: ShopStore, user_id: str, claim: IdempotencyClaim | None = None
) -> atomic.Outcome:
    """Turn the user's cart into an order; result ``{order_id, total_cents, items, ...}``.

    Raises 409 for an empty cart and 409 naming the short lines: the request
    is well formed, the cart's state forbids it now.
    """
    outcome = store.carts.run(
        store,
        "checkout",
        [
            Owner.user(user_id).key,
            keys.stock(),
            keys.products(),
            keys.orders(),
            keys.orders_next_id(),
            keys.user_orders(user_id),
        ],
        [user_id, datetime.now(UTC).isoformat(timespec="seconds")],
        claim,
    )
    code = outcome.result.get("error")
    if code == "empty_cart":
        raise ShopError(409, "empty_cart", "Your cart is empty.")
    if code == "out_of_stock":
        short = outcome.result.get("short", [])
        raise ShopError(409, "out_of_stock", _short_message(short), details={"short": short})
    return outcome


def public_order(order: dict[str, Any]) -> dict[str, Any]:
    """An order as the API shows it (without the internal user id)."""
    return {
        "order_id": order["order_id"],
        "created_at": order.get("created_at"),
        "total_cents": order["total_cents"],
        "items": order["items"],
    }


_ORDERS_VIEW = LuaScript.load("shop", "orders_view")


def history(store: ShopStore, user_id: str, limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
    """The user's latest orders, newest first (one round trip: shop/lua/orders_view.lua)."""
    raws = run_script(
        store.client, _ORDERS_VIEW, [keys.user_orders(user_id), keys.orders()], [limit]
    )
    return [public_order(json.loads(raw)) for raw in raws]
