"""SHOP_STATE=memory, the demonstration of what the shared store replaces:
sessions and carts in the replica's own process, everything else in Redis.

Two apps on one Redis play two replicas. In memory mode the second knows
nothing of what the first holds, and Redis holds no session and no cart; the
cart rules are the same code in both modes (one CartStore interface, two
backends that give the same answers); production refuses the mode; every page
says it is a demonstration.
"""

from __future__ import annotations

from typing import Any

import pytest
from shop_support import PASSWORD, make_app, register_and_login, text_of

from shop import config, replicamemory
from shop.atomic import Outcome
from shop.cartstore import REDIS_CARTS, CartStore
from shop.errors import ShopError
from shop.idempotency import make_claim

MEMORY = {"SHOP_STATE": "memory"}


def carts_in_redis(redis_client) -> list[str]:
    return sorted(redis_client.scan_iter(match="shop:cart:*"))


def sessions_in_redis(redis_client) -> list[str]:
    return sorted(redis_client.scan_iter(match="sess:*"))


def test_a_memory_replica_keeps_the_login_and_cart_to_itself(redis_server, redis_client):
    replica_a = make_app(redis_server.url, "replica-a", **MEMORY)
    replica_b = make_app(redis_server.url, "replica-b", **MEMORY)
    browser = replica_a.test_client()
    register_and_login(browser, "ada")
    add = browser.post("/api/cart/items", json={"product_id": "house-blend", "qty": 2})
    assert add.status_code == 201

    assert browser.get("/api/me").get_json() == {"username": "ada"}
    assert browser.get("/api/cart").get_json()["items"][0]["qty"] == 2
    # Nothing of it in Redis, which still holds the user (the database's part).
    assert carts_in_redis(redis_client) == []
    assert sessions_in_redis(redis_client) == []
    assert redis_client.hget("shop:users:by-name", "ada")

    # The same browser (same cookie) sent to the other replica: a stranger.
    other = replica_b.test_client()
    other.set_cookie("session", browser.get_cookie("session").value)
    assert other.get("/api/me").status_code == 401
    assert other.get("/api/cart").get_json() == {"items": [], "total_cents": 0}
    # It logs in again there: the user exists (Redis), the cart does not.
    login = other.post("/api/login", json={"username": "ada", "password": PASSWORD})
    assert login.status_code == 200
    assert other.get("/api/cart").get_json()["items"] == []


def test_two_redis_replicas_share_the_same_login_and_cart(shop_replicas, redis_client):
    """The other ending, for contrast: the cookie works on any replica."""
    replica_a, replica_b = shop_replicas
    browser = replica_a.test_client()
    register_and_login(browser, "ada")
    browser.post("/api/cart/items", json={"product_id": "house-blend", "qty": 2})
    assert carts_in_redis(redis_client) and sessions_in_redis(redis_client)

    other = replica_b.test_client()
    other.set_cookie("session", browser.get_cookie("session").value)
    assert other.get("/api/me").get_json() == {"username": "ada"}
    assert other.get("/api/cart").get_json()["items"][0]["qty"] == 2


def test_logout_and_login_rotate_the_memory_session(redis_server, redis_client):
    browser = make_app(redis_server.url, **MEMORY).test_client()
    register_and_login(browser, "ada")
    before = browser.get_cookie("session").value
    browser.post("/api/logout")
    assert browser.get_cookie("session") is None
    stale = make_app(redis_server.url, **MEMORY).test_client()
    stale.set_cookie("session", before)
    assert stale.get("/api/me").status_code == 401


def test_checkout_from_memory_takes_stock_in_redis_and_empties_the_cart(
    redis_server, redis_client
):
    browser = make_app(redis_server.url, **MEMORY).test_client()
    register_and_login(browser, "ada")
    stock = int(redis_client.hget("shop:stock", "paper-filters"))
    browser.post("/api/cart/items", json={"product_id": "paper-filters", "qty": 2})

    order = browser.post("/api/checkout")
    assert order.status_code == 201, order.get_json()
    assert order.get_json()["items"][0]["qty"] == 2
    assert int(redis_client.hget("shop:stock", "paper-filters")) == stock - 2
    assert browser.get("/api/orders").get_json()[0]["order_id"] == order.get_json()["order_id"]
    assert browser.get("/api/cart").get_json()["items"] == []
    assert browser.post("/api/checkout").get_json()["error"] == "empty_cart"


def test_memory_checkout_refuses_what_is_not_in_stock(redis_server, redis_client):
    browser = make_app(redis_server.url, **MEMORY).test_client()
    register_and_login(browser, "ada")
    browser.post("/api/cart/items", json={"product_id": "paper-filters", "qty": 2})
    redis_client.hset("shop:stock", "paper-filters", 1)
    refused = browser.post("/api/checkout")
    assert refused.status_code == 409
    assert refused.get_json()["short"][0]["available"] == 1
    assert browser.get("/api/cart").get_json()["items"][0]["qty"] == 2  # kept


# -- one interface, two backends --------------------------------------------------


def scenario(carts: CartStore, store, owner: str) -> list[Any]:
    """Every branch of the cart scripts' contract, each step's answer recorded.
    max lines 2 and max qty 5 so that both limits are reached."""
    cart, visitor, products = f"shop:cart:u:{owner}", f"shop:cart:a:{owner}", "shop:products"
    seen: list[Any] = []

    def line(script: str, key: str, pid: str, qty: int) -> None:
        outcome = carts.run(store, script, [key, products], [pid, qty, 5, 2, 0])
        seen.append((script, pid, qty, outcome.result))

    line("cart_add", cart, "tamper", 2)
    line("cart_add", cart, "tamper", 3)  # to the limit
    line("cart_add", cart, "tamper", 1)  # qty_limit
    line("cart_add", cart, "no-such-product", 1)  # unknown_product
    line("cart_add", cart, "gift-card", 1)
    line("cart_add", cart, "house-blend", 1)  # cart_full
    line("cart_set", cart, "gift-card", 4)
    line("cart_set", cart, "house-blend", 1)  # cart_full
    line("cart_set", cart, "no-such-product", 0)  # unknown_product
    line("cart_set", cart, "tamper", 0)  # removes
    line("cart_set", cart, "house-blend", 1)  # room again
    line("cart_add", visitor, "gift-card", 3)
    line("cart_add", visitor, "travel-mug", 1)
    merged = carts.run(store, "cart_merge", [visitor, cart], [5, 2])
    seen.append(("cart_merge", merged.result))
    seen.append(("cart", {k: int(v) for k, v in carts.quantities(store, cart).items()}))
    seen.append(("visitor", carts.quantities(store, visitor)))
    return seen


def test_both_backends_give_the_same_answers_to_the_cart_scripts(redis_server, redis_client):
    memory_app = make_app(redis_server.url, **MEMORY)
    memory_store = memory_app.extensions["shop"].store
    assert isinstance(memory_store.carts, replicamemory.ReplicaMemoryCarts)
    redis_store = make_app(redis_server.url).extensions["shop"].store
    assert redis_store.carts is REDIS_CARTS

    in_memory = scenario(memory_store.carts, memory_store, "7")
    in_redis = scenario(REDIS_CARTS, redis_store, "7")
    assert in_memory == in_redis
    # Not vacuous: every refusal and the merge's capping happened.
    errors = {step[3].get("error") for step in in_redis if len(step) == 4}
    assert errors == {None, "qty_limit", "unknown_product", "cart_full"}
    assert in_redis[-3] == ("cart_merge", {"moved": 1, "dropped": 1})
    assert in_redis[-2] == ("cart", {"gift-card": 5, "house-blend": 1})


def replay(carts: CartStore, store) -> list[Outcome | str]:
    claim = make_claim(scope="u:9", key="k-1", secret="s", request_parts=["POST", "/x", {"q": 1}])
    other = make_claim(scope="u:9", key="k-1", secret="s", request_parts=["POST", "/x", {"q": 2}])
    args = [["shop:cart:u:9", "shop:products"], ["tamper", 1, 5, 2, 0]]
    seen: list[Outcome | str] = [carts.run(store, "cart_add", *args, claim) for _ in range(2)]
    with pytest.raises(ShopError) as refused:
        carts.run(store, "cart_add", *args, other)
    return [*seen, refused.value.code]


def test_both_backends_apply_a_key_once_and_refuse_it_for_another_request(
    redis_server, redis_client
):
    memory_store = make_app(redis_server.url, **MEMORY).extensions["shop"].store
    redis_store = make_app(redis_server.url).extensions["shop"].store
    for carts, store in ((memory_store.carts, memory_store), (REDIS_CARTS, redis_store)):
        first, again, reused = replay(carts, store)
        assert (first.replayed, again.replayed) == (False, True)
        assert first.result == again.result == {"product_id": "tamper", "qty": 1}
        assert reused == "idempotency_key_reused"
        redis_client.delete("shop:cart:u:9")


# -- a demonstration, and says so ------------------------------------------------


def test_every_page_of_a_memory_replica_says_it_is_a_demonstration(redis_server, redis_client):
    page = make_app(redis_server.url, **MEMORY).test_client().get("/").get_data(as_text=True)
    assert "lost if it dies" in text_of(page, "demo-banner")
    assert "state kept in its memory" in page
    plain = make_app(redis_server.url).test_client().get("/").get_data(as_text=True)
    assert 'id="demo-banner"' not in plain


def test_a_memory_replica_logs_that_it_is_a_demonstration(redis_server, redis_client, caplog):
    make_app(redis_server.url, **MEMORY)
    assert replicamemory.STARTUP_WARNING in caplog.text


def test_production_refuses_the_memory_mode() -> None:
    env = {"SHOP_ENV": "production", "SECRET_KEY": "k" * 40, "SHOP_STATE": "memory"}
    with pytest.raises(RuntimeError, match="demonstration"):
        config.load_config(env)
    assert config.load_config({**env, "SHOP_STATE": "redis"})["SHOP_STATE"] == "redis"
    with pytest.raises(ValueError, match="SHOP_STATE must be one of redis, memory"):
        config.load_config({"SHOP_STATE": "memcached"})


def test_a_memory_replica_runs_one_worker_and_refuses_more() -> None:
    assert config.load_server_settings({"SHOP_STATE": "memory"}).workers == 1
    assert config.load_server_settings({}).workers == 2
    with pytest.raises(ValueError, match="SHOP_WORKERS must be 1"):
        config.load_server_settings({"SHOP_STATE": "memory", "SHOP_WORKERS": "2"})
