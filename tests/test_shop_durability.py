"""The shop's WAIT at its one write choke point (shop.atomic.run), on a real
primary + replica: a write is acknowledged only once a replica has it, and
otherwise the shopper gets a fast 503 with Retry-After, never a hang or a 500.

With Redis's own write guard as the launcher's HA nodes have it
(min-replicas-to-write), a primary that has lost its replica refuses writes
before applying them: still a 503, and now nothing changed; reads go on.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from shop_support import login, make_app, register, snapshot

from sessionstore import NO_WAIT, Durability, NotReplicated, WriteRefused, redis_from_url
from shop import atomic, cart, catalog, idempotency, keys
from shop.cluster import procs
from shop.shopstore import ShopStore

PRODUCT = "espresso-cup"  # from shop/data/products.json
ACKS = Durability(replica_acks=1, timeout=timedelta(milliseconds=300))
VISITOR_TTL = 3600  # an anonymous cart's TTL (the app passes its sessions' lifetime)


@pytest.fixture
def durable(primary_with_replica):
    """(primary client, replica client, replica process) with the catalog seeded."""
    primary_server, replica_proc = primary_with_replica
    client = redis_from_url(primary_server.url, decode_responses=True, retries=0)
    info = client.info("replication")["slave0"]
    replica = redis.Redis(
        host=procs.LOOPBACK, port=int(info["port"]), socket_timeout=5, decode_responses=True
    )
    catalog.seed(ShopStore(client))
    try:
        yield client, replica, replica_proc
    finally:
        client.close()
        replica.close()


def add(client: redis.Redis, visitor: str, claim: idempotency.IdempotencyClaim | None = None):
    """One cart_add of one product through the choke point, with one replica ack asked."""
    owner = cart.Owner.visitor(visitor, VISITOR_TTL)
    return atomic.run(
        ShopStore(client, ACKS),
        "cart_add",
        [owner.key, keys.products()],
        [PRODUCT, 1, 99, 50, owner.ttl],
        claim,
    )


def test_acknowledged_write_is_already_on_the_replica(durable):
    client, replica, _ = durable
    assert add(client, "v1").result == {"product_id": PRODUCT, "qty": 1}
    # No polling: WAIT returned only after the replica confirmed the write.
    assert replica.hget(cart.Owner.visitor("v1", VISITOR_TTL).key, PRODUCT) == "1"


def test_replay_waits_too_and_covers_the_original_write(durable):
    client, replica, _ = durable
    claim = idempotency.IdempotencyClaim(
        record_key=keys.idempotency("a:v2", "k1"), fingerprint="f"
    )
    first = add(client, "v2", claim)
    again = add(client, "v2", claim)
    assert again.replayed and again.result == first.result
    assert replica.hget(cart.Owner.visitor("v2", VISITOR_TTL).key, PRODUCT) == "1"  # applied once
    # The replay rewrote the record's expiry unchanged (that is what WAIT counts).
    assert 0 < client.ttl(claim.record_key) <= idempotency.RECORD_TTL_SECONDS


def test_no_replica_means_a_fast_not_replicated(durable):
    client, _, replica_proc = durable
    procs.stop_process(replica_proc.pid, timeout=0)  # a crash; a SIGTERMed replica lingers
    started = time.monotonic()
    with pytest.raises(NotReplicated):
        add(client, "v3")
    assert time.monotonic() - started < 1.5  # the ack timeout, not a hang
    # Redis cannot roll it back: the write stays on the primary, unacknowledged.
    assert client.hget(cart.Owner.visitor("v3", VISITOR_TTL).key, PRODUCT) == "1"


def test_shop_answers_503_with_retry_after_when_acks_are_short(primary_with_replica):
    primary_server, replica_proc = primary_with_replica
    app = make_app(
        primary_server.url,
        SHOP_REPLICA_ACKS=1,
        SHOP_REPLICA_ACK_TIMEOUT=0.3,
        SESSION_REPLICA_ACKS=1,
        SESSION_REPLICA_ACK_TIMEOUT=0.3,
    )
    api = app.test_client()
    key = {"Idempotency-Key": "add-1"}
    body = {"product_id": api.get("/api/products").json[0]["id"], "qty": 1}
    assert api.post("/api/cart/items", json=body, headers=key).status_code == 201

    procs.stop_process(replica_proc.pid, timeout=0)  # a crash; a SIGTERMed replica lingers
    started = time.monotonic()
    response = api.post("/api/cart/items", json=body, headers={"Idempotency-Key": "add-2"})
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.json["error"] == "store_unavailable"
    assert elapsed < 2


def test_acks_default_to_off(redis_server, redis_client):
    app = make_app(redis_server.url)
    assert app.extensions["shop"].store.durability == NO_WAIT


# -- with the write guard (min-replicas-to-write), as the launcher's HA nodes ----------
def test_guarded_primary_without_replica_refuses_and_writes_nothing(guarded_primary):
    client = redis_from_url(guarded_primary.url, decode_responses=True, retries=0)
    catalog.seed(ShopStore(client))
    assert add(client, "v4").result == {"product_id": PRODUCT, "qty": 1}
    guarded_primary.lose_the_replica()
    with pytest.raises(WriteRefused):
        add(client, "v4")
    # Refused before it was applied, unlike a write WAIT timed out on.
    assert client.hget(cart.Owner.visitor("v4", VISITOR_TTL).key, PRODUCT) == "1"
    client.close()


def test_shop_on_a_guarded_primary_without_replica_serves_reads_refuses_writes(
    guarded_primary,
):
    acks = {"SHOP_REPLICA_ACKS": 1, "SESSION_REPLICA_ACKS": 1}
    api = make_app(guarded_primary.url, CSRF_ENABLED=False, **acks).test_client()
    register(api, "ada")
    login(api, "ada")
    body = {"product_id": "espresso-cup", "qty": 2}
    assert api.post("/api/cart/items", json=body).status_code == 201
    store = api.get("/api/cluster").json["store"]
    assert store["address"] == f"127.0.0.1:{guarded_primary.server.port}"
    assert store["replicas_in_sync"] == 1 and store["writes_accepted"]
    assert 'id="store-refusing" hidden' in api.get("/cluster").get_data(as_text=True)
    guarded_primary.lose_the_replica()
    # The cluster page says why writes fail (a read: this session got its form
    # token on the page drawn above, so drawing it again writes nothing).
    store = api.get("/api/cluster").json["store"]
    assert store["replicas"] == [] and not store["writes_accepted"]
    page = api.get("/cluster").get_data(as_text=True)
    assert '<span id="store-refusing">Writes get a 503' in page
    with guarded_primary.server.client(decode_responses=True) as raw:
        before = snapshot(raw)

        # A replica starting now (its catalog already seeded) comes up and serves reads.
        fresh = make_app(guarded_primary.url, replica="replica-b", **acks).test_client()
        assert fresh.get("/api/products").status_code == 200
        assert api.get("/api/me").json == {"username": "ada"}
        assert api.get("/api/cart").json["items"][0]["qty"] == 2

        # Writes of every kind: a fast JSON 503 with Retry-After, never a 500.
        other = make_app(guarded_primary.url, replica="replica-c", **acks).test_client()
        for client, method, path, payload in [
            (api, "POST", "/api/cart/items", body),
            (api, "PUT", "/api/cart/items/espresso-cup", {"qty": 5}),
            (api, "POST", "/api/checkout", None),
            (other, "POST", "/api/register", {"username": "bob", "password": "a long password"}),
            (other, "POST", "/api/login", {"username": "ada", "password": "correct horse battery"}),
        ]:
            response = client.open(path, method=method, json=payload)
            assert response.status_code == 503, (path, response.json)
            assert response.json["error"] == "store_unavailable"
            assert int(response.headers["Retry-After"]) > 0
        # ... and nothing of them was written.
        assert snapshot(raw) == before
