"""``SHOP_STATE=memory``: sessions and carts in the replica's own memory.

A demonstration of the design this project exists to replace, never a mode
to run a shop in (shop/config.py refuses it with ``SHOP_ENV=production``,
every page says so in a banner, and the replica logs it at start). Paired with
nginx's sticky hash (the launcher's ``up --state memory``), every request of
a shopper goes to the replica that holds their session, so it looks as if it
works, until that replica dies: the shopper is logged out and the cart is
gone (``shop-cluster demo --contrast`` shows both endings side by side).

"Memory" is the process's: gunicorn runs one worker per replica in this mode
(shop/config.py), whose threads share these dicts under a lock. Users, the
catalog, stock and orders stay in Redis, the database of the classic design.

- :class:`ReplicaMemoryCarts` is a ``shop.cartstore.CartStore``: it carries
  out the cart scripts' contract (their Lua headers) on a dict, so cart.py
  and orders.py are the same code in both modes. A checkout still takes the
  stock and writes the order in Redis, with the lines passed in.
- :class:`MemorySessionInterface` is a Flask session interface: the cookie
  holds a random id, the values stay in a dict here.

Deliberately simple, as the thing it demonstrates is: no TTL for anonymous
carts, whole-session saves (the last of two concurrent requests wins).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, Request, Response
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SecureCookieSession

from sessionstore.interface import SessionIdCookie, vary_on_cookie
from sessionstore.session import is_well_formed_sid, new_sid

from . import atomic, catalog
from .catalog import Product
from .idempotency import IdempotencyClaim
from .shopstore import ShopStore

BANNER = (
    "Demonstration mode (SHOP_STATE=memory): your session and cart live only in "
    "this replica's memory and are lost if it dies."
)
STARTUP_WARNING = (
    "SHOP_STATE=memory: sessions and carts live in this process's memory and die with it; "
    "a demonstration of what a shared store avoids, never for production"
)
# Idempotency records kept per replica: enough for any client's retries, and
# a bound on the memory they take (oldest dropped first).
MAX_RECORDS = 10_000
# Sessions kept before expired ones are swept on the next new session.
SWEEP_ABOVE = 10_000

Cart = dict[str, int]


# ---------------------------------------------------------------- carts
# Each function is the body of the Lua script of the same name (shop/lua/),
# on one replica's dict: the same checks in the same order, the same results.
def _cart_add(carts: dict[str, Cart], keys: list[str], args: list[Any], known: bool) -> dict:
    pid, qty, max_qty, max_lines = args[0], int(args[1]), int(args[2]), int(args[3])
    if not known:
        return {"error": "unknown_product"}
    cart = carts.setdefault(keys[0], {})
    current = cart.get(pid, 0)
    if current == 0 and len(cart) >= max_lines:
        return {"error": "cart_full", "limit": max_lines}
    if current + qty > max_qty:
        return {"error": "qty_limit", "limit": max_qty, "current": current}
    cart[pid] = current + qty
    return {"product_id": pid, "qty": cart[pid]}


def _cart_set(carts: dict[str, Cart], keys: list[str], args: list[Any], known: bool) -> dict:
    pid, qty, max_lines = args[0], int(args[1]), int(args[3])
    cart = carts.setdefault(keys[0], {})
    in_cart = pid in cart
    if not in_cart and not known:
        return {"error": "unknown_product"}
    if qty == 0:
        cart.pop(pid, None)
    else:
        if not in_cart and len(cart) >= max_lines:
            return {"error": "cart_full", "limit": max_lines}
        cart[pid] = qty
    return {"product_id": pid, "qty": qty}


def _cart_merge(carts: dict[str, Cart], keys: list[str], args: list[Any], known: bool) -> dict:
    max_qty, max_lines = int(args[0]), int(args[1])
    source, target = carts.pop(keys[0], {}), carts.setdefault(keys[1], {})
    moved = dropped = 0
    for pid, qty in source.items():
        current = target.get(pid, 0)
        if current == 0 and len(target) >= max_lines:
            dropped += 1
        else:
            target[pid] = min(current + qty, max_qty)
            moved += 1
    return {"moved": moved, "dropped": dropped}


Change = Callable[[dict[str, Cart], list[str], list[Any], bool], dict]
CHANGES: dict[str, Change] = {
    "cart_add": _cart_add,
    "cart_set": _cart_set,
    "cart_merge": _cart_merge,
}


class ReplicaMemoryCarts:
    """Carts in this process: cart key -> {product id: qty}, under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._carts: dict[str, Cart] = {}
        self._records: OrderedDict[str, str] = OrderedDict()

    def run(
        self,
        store: ShopStore,
        name: str,
        keys: list[str],
        args: list[Any],
        claim: IdempotencyClaim | None = None,
    ) -> atomic.Outcome:
        if name == "checkout":
            return self._checkout(store, keys, args, claim)
        change = CHANGES[name]
        # Whether the product exists is the catalog's, in Redis: asked before
        # the lock (K[2] of cart_add and cart_set; cart_merge has none).
        known = name == "cart_merge" or bool(store.client.hexists(keys[1], args[0]))
        with self._lock:
            record = self._records.get(claim.record_key) if claim else None
            kind = "replay" if record is not None else "fresh"
            if record is None:
                result = change(self._carts, keys, args, known)
                record = json.dumps({"fp": claim.fingerprint if claim else "", "result": result})
                if claim:
                    self._remember(claim.record_key, record)
        return atomic.finish(store, name, kind, record, claim)

    def _remember(self, record_key: str, record: str) -> None:
        self._records[record_key] = record
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)

    def _checkout(
        self, store: ShopStore, keys: list[str], args: list[Any], claim: IdempotencyClaim | None
    ) -> atomic.Outcome:
        """checkout.lua in Redis (stock, order, idempotency), given this cart's lines;
        the lines it bought then leave the cart here."""
        with self._lock:
            lines = dict(self._carts.get(keys[0], {}))
        outcome = atomic.run(store, "checkout", keys, [*args, json.dumps(lines)], claim)
        if not outcome.replayed and "error" not in outcome.result:
            with self._lock:
                cart = self._carts.get(keys[0], {})
                for item in outcome.result.get("items", []):
                    left = cart.get(item["product_id"], 0) - item["qty"]
                    if left > 0:
                        cart[item["product_id"]] = left
                    else:
                        cart.pop(item["product_id"], None)
        return outcome

    def quantities(self, store: ShopStore, cart_key: str) -> dict[str, int | str]:
        with self._lock:
            return dict(self._carts.get(cart_key, {}))

    def lines(self, store: ShopStore, cart_key: str) -> list[tuple[Product, int]]:
        quantities = self.quantities(store, cart_key)
        products = catalog.products_by_id(store, sorted(quantities))
        return [(product, int(quantities[pid])) for pid, product in products.items()]


# ------------------------------------------------------------- sessions
class MemorySession(SecureCookieSession):
    """A dict whose values stay in this process; `regenerate()` and `destroy()`
    as sessionstore's RedisSession has them (shop/identity.py calls both)."""

    def __init__(
        self,
        initial: dict[str, Any] | None = None,
        sid: str | None = None,
        created_at: datetime | None = None,
    ) -> None:
        super().__init__(initial)
        self.sid = sid
        self.created_at = created_at
        self.rotating = False
        self.destroyed = False

    def regenerate(self) -> None:
        """A new id at the next save, same data (at login: no session fixation)."""
        self.rotating = True
        self.modified = True

    def destroy(self) -> None:
        """Gone from memory at the end of this request; the cookie is cleared."""
        self.clear()
        self.destroyed = True


class _Stored:
    __slots__ = ("data", "created_at", "last_seen")

    def __init__(self, data: str, created_at: datetime) -> None:
        self.data = data
        self.created_at = created_at
        self.last_seen = time.monotonic()


class MemorySessionInterface(SessionIdCookie):
    """Server-side sessions in a dict of this process: id in the cookie, values here."""

    def __init__(self, *, idle_timeout: timedelta, absolute_timeout: timedelta) -> None:
        self.idle_seconds = idle_timeout.total_seconds()
        self.absolute_timeout = absolute_timeout
        self._lock = threading.Lock()
        self._sessions: dict[str, _Stored] = {}
        # Flask's own session serializer: values come back as they went in
        # (tuples, datetimes), and no live object is shared between requests.
        self._serializer = TaggedJSONSerializer()

    def _expired(self, stored: _Stored) -> bool:
        idle = time.monotonic() - stored.last_seen > self.idle_seconds
        return idle or datetime.now(UTC) - stored.created_at > self.absolute_timeout

    def open_session(self, app: Flask, request: Request) -> MemorySession:
        sid = request.cookies.get(self.get_cookie_name(app))
        if not is_well_formed_sid(sid):
            return MemorySession()
        with self._lock:
            stored = self._sessions.get(sid)
            if stored is not None and self._expired(stored):
                del self._sessions[sid]
                stored = None
            if stored is None:
                # Unknown here: another replica's, or one this process held
                # before it died. Either way the visitor starts afresh.
                return MemorySession()
            stored.last_seen = time.monotonic()
            data = stored.data
        return MemorySession(self._serializer.loads(data), sid, stored.created_at)

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        if not isinstance(session, MemorySession):
            return
        if session.accessed:
            vary_on_cookie(response)
        if session.destroyed or (session.sid and not session and session.modified):
            with self._lock:
                self._sessions.pop(session.sid or "", None)
            self._clear_cookie(app, response)
            return
        if not session.modified or not session:
            return  # unchanged, or a visitor with nothing to keep: no session, no cookie
        old_sid, sid = session.sid, session.sid
        if sid is None or session.rotating:
            sid = new_sid()
        created = session.created_at or datetime.now(UTC)
        data = self._serializer.dumps(dict(session))
        with self._lock:
            if old_sid and old_sid != sid:
                self._sessions.pop(old_sid, None)
            if sid not in self._sessions and len(self._sessions) >= SWEEP_ABOVE:
                self._sweep()
            self._sessions[sid] = _Stored(data, created)
        session.sid, session.created_at = sid, created
        self._set_cookie(app, session, response)

    def _sweep(self) -> None:
        for sid in [s for s, stored in self._sessions.items() if self._expired(stored)]:
            del self._sessions[sid]
