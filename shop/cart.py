"""Carts: one Redis hash per owner (product id -> qty), changed only by Lua scripts.

An owner is a logged-in user (cart kept without TTL) or an anonymous visitor
(cart expires a week after its last change). Limits: 1..99 per line, at most
50 lines. Every change is a single script, so two replicas changing one cart
at once never lose either change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import atomic, catalog, keys
from .errors import ShopError
from .idempotency import IdempotencyClaim
from .shopstore import ShopStore

MAX_QTY = 99
MAX_LINES = 50
VISITOR_CART_TTL_SECONDS = 7 * 24 * 3600
PRODUCT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

ERRORS = {
    "unknown_product": (404, "There is no such product."),
    "cart_full": (400, f"A cart holds at most {MAX_LINES} different products."),
    "qty_limit": (400, f"At most {MAX_QTY} of one product fit in a cart."),
}


@dataclass(frozen=True)
class Owner:
    """Whose cart: the Redis key, and the TTL its changes refresh (0: none)."""

    key: str
    ttl: int

    @classmethod
    def user(cls, user_id: str) -> Owner:
        return cls(keys.cart(keys.user_owner(user_id)), 0)

    @classmethod
    def visitor(cls, visitor_id: str) -> Owner:
        return cls(keys.cart(keys.visitor_owner(visitor_id)), VISITOR_CART_TTL_SECONDS)


@dataclass(frozen=True)
class Line:
    product_id: str
    name: str
    qty: int
    price_cents: int
    stock: int

    @property
    def subtotal_cents(self) -> int:
        return self.qty * self.price_cents

    def to_api(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "name": self.name,
            "qty": self.qty,
            "price_cents": self.price_cents,
            "subtotal_cents": self.subtotal_cents,
        }


@dataclass(frozen=True)
class Cart:
    lines: list[Line]

    @property
    def total_cents(self) -> int:
        return sum(line.subtotal_cents for line in self.lines)

    @property
    def count(self) -> int:
        return sum(line.qty for line in self.lines)

    def to_api(self) -> dict[str, Any]:
        return {"items": [line.to_api() for line in self.lines], "total_cents": self.total_cents}


def _bad_qty(allow_zero: bool) -> ShopError:
    low = 0 if allow_zero else 1
    return ShopError(400, "bad_qty", f"qty must be a whole number from {low} to {MAX_QTY}.")


def parse_qty(value: Any, *, allow_zero: bool = False) -> int:
    """Validate a JSON qty: an integer (not a bool, float or string) in range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_qty(allow_zero)
    if not (0 if allow_zero else 1) <= value <= MAX_QTY:
        raise _bad_qty(allow_zero)
    return value


def parse_form_qty(value: str | None, *, allow_zero: bool = False) -> int:
    """Validate a form's qty field: ASCII digits only, then the same range as JSON."""
    text = (value or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 3:
        raise _bad_qty(allow_zero)
    return parse_qty(int(text), allow_zero=allow_zero)


def parse_product_id(value: Any) -> str:
    """Validate a product id's type and shape (whether it exists is for Redis to say)."""
    if not isinstance(value, str):
        raise ShopError(400, "bad_product_id", "product_id must be a string.")
    if not PRODUCT_ID_RE.match(value):
        raise ShopError(404, "unknown_product", "There is no such product.")
    return value


def _change_line(
    script: str,
    store: ShopStore,
    owner: Owner,
    product_id: str,
    qty: int,
    claim: IdempotencyClaim | None,
) -> atomic.Outcome:
    """Run a one-line cart script; turn its refusal into the matching ShopError."""
    outcome = atomic.run(
        store,
        script,
        [owner.key, keys.products()],
        [product_id, qty, MAX_QTY, MAX_LINES, owner.ttl],
        claim,
    )
    code = outcome.result.get("error")
    if code:
        status, message = ERRORS[code]
        raise ShopError(status, code, message)
    return outcome


def add(
    store: ShopStore,
    owner: Owner,
    product_id: str,
    qty: int,
    claim: IdempotencyClaim | None = None,
) -> atomic.Outcome:
    """Add `qty` units to a line; result ``{product_id, qty}`` (the line's new qty)."""
    return _change_line("cart_add", store, owner, product_id, qty, claim)


def set_qty(
    store: ShopStore,
    owner: Owner,
    product_id: str,
    qty: int,
    claim: IdempotencyClaim | None = None,
) -> atomic.Outcome:
    """Set a line's qty (0 removes it); result ``{product_id, qty}``."""
    return _change_line("cart_set", store, owner, product_id, qty, claim)


def merge(store: ShopStore, source: Owner, target: Owner) -> dict[str, Any]:
    """Move `source`'s lines into `target`'s cart atomically; ``{moved, dropped}``."""
    outcome = atomic.run(store, "cart_merge", [source.key, target.key], [MAX_QTY, MAX_LINES])
    return outcome.result


def count(store: ShopStore, owner: Owner) -> int:
    """How many items the cart holds, all lines together (one round trip)."""
    return sum(int(qty) for qty in store.client.hvals(owner.key))


def get(store: ShopStore, owner: Owner) -> Cart:
    """The cart with current names and prices, in catalog order (two round trips)."""
    quantities = store.client.hgetall(owner.key)
    products = catalog.products_by_id(store, sorted(quantities))
    lines = [
        Line(pid, p.name, int(quantities[pid]), p.price_cents, p.stock)
        for pid, p in sorted(products.items(), key=lambda item: (item[1].position, item[0]))
    ]
    return Cart(lines)
