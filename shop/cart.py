"""Carts: one Redis hash per owner (product id -> qty), changed only by Lua scripts.

An owner is a logged-in user (cart kept without TTL, at most 50 lines) or an
anonymous visitor (at most 20 lines, expiring after its last change no later
than the visitor's session can: once the session is gone nobody can reach the
cart, so anything longer is memory kept for nobody). 1..99 per line. Every
change is a single script, so two replicas changing one cart at once never
lose either change. The scripts run where ``store.carts`` keeps carts
(shop/cartstore.py): Redis, or the replica's memory with ``SHOP_STATE=memory``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import atomic, keys
from .errors import ShopError
from .idempotency import IdempotencyClaim
from .shopstore import ShopStore

MAX_QTY = 99
MAX_LINES = 50
# An anonymous cart costs Redis memory for anyone who asks, bots included:
# room for more than the whole catalog, far less than a user's.
MAX_VISITOR_LINES = 20
PRODUCT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

# A malformed request is a 400 whatever the cart holds; a well-formed one the
# cart's state forbids right now is a 409 (as an empty cart at checkout).
ERRORS = {
    "unknown_product": (404, "There is no such product."),
    "cart_full": (409, "A cart holds at most {limit} different products."),
    "qty_limit": (409, f"At most {MAX_QTY} of one product fit in a cart."),
}


@dataclass(frozen=True)
class Owner:
    """Whose cart: the Redis key, the TTL its changes refresh (0: none), its line limit."""

    key: str
    ttl: int
    max_lines: int = MAX_LINES

    @classmethod
    def user(cls, user_id: str) -> Owner:
        return cls(keys.cart(keys.user_owner(user_id)), 0)

    @classmethod
    def visitor(cls, visitor_id: str, ttl_seconds: int) -> Owner:
        """An anonymous visitor's cart; `ttl_seconds`: the longest its session can live."""
        key = keys.cart(keys.visitor_owner(visitor_id))
        return cls(key, ttl_seconds, MAX_VISITOR_LINES)


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
    """Validate a JSON qty: a whole number (not a bool or a string) in range.

    ``2.0`` is the number 2, as JSON and JSON Schema's "integer" have it; 2.5 is not.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
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
    outcome = store.carts.run(
        store,
        script,
        [owner.key, keys.products()],
        [product_id, qty, MAX_QTY, owner.max_lines, owner.ttl],
        claim,
    )
    code = outcome.result.get("error")
    if code:
        status, message = ERRORS[code]
        raise ShopError(status, code, message.format(limit=owner.max_lines))
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
    outcome = store.carts.run(
        store, "cart_merge", [source.key, target.key], [MAX_QTY, target.max_lines]
    )
    return outcome.result


def count(store: ShopStore, owner: Owner) -> int:
    """How many items the cart holds, all lines together (one round trip)."""
    return sum(int(qty) for qty in store.carts.quantities(store, owner.key).values())


def get(store: ShopStore, owner: Owner) -> Cart:
    """The cart with current names and prices, in catalog order (in Redis, one
    round trip: shop/lua/cart_view.lua reads the cart and its products together)."""
    lines = store.carts.lines(store, owner.key)
    lines.sort(key=lambda line: (line[0].position, line[0].id))
    return Cart([Line(p.id, p.name, qty, p.price_cents, p.stock) for p, qty in lines])
