"""Every endpoint a shopper uses while shopping costs at most two Redis round
trips: the session's load, and one read or one atomic script for the shop.

Counted from Redis's own count of read events (INFO stats
``total_reads_processed``): Redis reads once per request a client sends, and
once for a whole pipeline, so this is round trips, whatever the client library.
"""

from __future__ import annotations

import uuid

import pytest
from shop_support import register_and_login

MAX_TRIPS = 2


def reads(redis_client) -> int:
    return int(redis_client.info("stats")["total_reads_processed"])


def trips_of(redis_client, send) -> int:
    """Round trips `send()` made, less the one INFO that reads the count after it."""
    before = reads(redis_client)
    send()
    return reads(redis_client) - before - 1


@pytest.fixture
def shopper(api):
    register_and_login(api, f"trips-{uuid.uuid4().hex[:8]}")
    return api


def add_one(client) -> None:
    response = client.post(
        "/api/cart/items",
        json={"product_id": "house-blend", "qty": 1},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.get_json()


def checkout(client) -> None:
    response = client.post("/api/checkout", headers={"Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 201, response.get_json()


ENDPOINTS = {
    "GET /api/products": lambda c: c.get("/api/products"),
    "GET /api/me": lambda c: c.get("/api/me"),
    "POST /api/cart/items": add_one,
    "GET /api/cart": lambda c: c.get("/api/cart"),
    "GET /api/orders": lambda c: c.get("/api/orders"),
}


@pytest.mark.parametrize("endpoint", [*ENDPOINTS, "POST /api/checkout"])
def test_a_shopping_request_costs_at_most_two_round_trips(shopper, redis_client, endpoint):
    add_one(shopper)
    checkout(shopper)  # every script is loaded into Redis by now
    for send in ENDPOINTS.values():
        send(shopper)
    if endpoint == "POST /api/checkout":
        add_one(shopper)
        trips = trips_of(redis_client, lambda: checkout(shopper))
    else:
        trips = trips_of(redis_client, lambda: ENDPOINTS[endpoint](shopper))
    assert 1 <= trips <= MAX_TRIPS, f"{endpoint}: {trips} round trips"
