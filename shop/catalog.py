"""The product catalog: seeded from ``shop/data/products.json``, read from Redis.

Prices are integer cents everywhere; only templates format them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from . import keys
from .shopstore import ShopStore


@dataclass(frozen=True)
class Product:
    """A product as shown to customers, with its stock at the time it was read."""

    id: str
    name: str
    description: str
    price_cents: int
    stock: int
    position: int = 0

    def to_api(self) -> dict[str, Any]:
        """The JSON API's shape of a product (README, API table: id, name, price_cents, stock)."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "price_cents": self.price_cents,
            "stock": self.stock,
        }


def load_seed_data() -> list[dict[str, Any]]:
    """The products shipped with the package, in display order."""
    text = (resources.files("shop") / "data" / "products.json").read_text(encoding="utf-8")
    return json.loads(text)


def seed(store: ShopStore, products: list[dict[str, Any]] | None = None) -> int:
    """Add the products (and their initial stock) that Redis does not have yet.

    HSETNX only fills what is absent, so every replica can seed at start-up,
    concurrently, without ever resetting stock that sales have already taken.
    What is there is read first and only the absent is written: a replica
    starting on a seeded store writes nothing, so it starts even while the
    primary refuses writes (no replica in sync). Returns how many products
    were added.
    """
    products = load_seed_data() if products is None else products
    pipe = store.client.pipeline(transaction=False)
    pipe.hkeys(keys.products())
    pipe.hkeys(keys.stock())
    have_info, have_stock = (set(ids) for ids in pipe.execute())
    missing = [
        (position, item)
        for position, item in enumerate(products)
        if item["id"] not in have_info or item["id"] not in have_stock
    ]
    if not missing:
        return 0
    pipe = store.client.pipeline(transaction=True)
    for position, item in missing:
        info = {
            "id": item["id"],
            "name": item["name"],
            "description": item.get("description", ""),
            "price_cents": int(item["price_cents"]),
            "position": position,
        }
        pipe.hsetnx(keys.products(), item["id"], json.dumps(info))
        pipe.hsetnx(keys.stock(), item["id"], int(item["stock"]))
    added = pipe.execute()
    return sum(1 for flag in added[::2] if flag)


def product_from_json(raw: str | bytes, stock: Any) -> Product:
    """A product from its ``shop:products`` JSON and its stock count (absent: 0)."""
    info = json.loads(raw)
    return Product(
        id=info["id"],
        name=info["name"],
        description=info.get("description", ""),
        price_cents=int(info["price_cents"]),
        stock=int(stock or 0),
        position=int(info.get("position", 0)),
    )


def list_products(store: ShopStore) -> list[Product]:
    """All products with current stock, in display order (one round trip)."""
    pipe = store.client.pipeline(transaction=False)
    pipe.hgetall(keys.products())
    pipe.hgetall(keys.stock())
    infos, stock = pipe.execute()
    products = [product_from_json(raw, stock.get(pid)) for pid, raw in infos.items()]
    return sorted(products, key=lambda p: (p.position, p.id))


def products_by_id(store: ShopStore, ids: list[str]) -> dict[str, Product]:
    """The named products that exist, with current stock (one round trip)."""
    if not ids:
        return {}
    pipe = store.client.pipeline(transaction=False)
    pipe.hmget(keys.products(), ids)
    pipe.hmget(keys.stock(), ids)
    infos, stock = pipe.execute()
    return {
        pid: product_from_json(raw, units)
        for pid, raw, units in zip(ids, infos, stock, strict=True)
        if raw is not None
    }
