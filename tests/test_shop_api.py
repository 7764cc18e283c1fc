"""The JSON API against a real redis-server: the contract of the README's API table, end to end."""

from __future__ import annotations

import json
import re

import pytest
from shop_support import (
    PASSWORD,
    login,
    make_app,
    register,
    register_and_login,
    session_cookie,
)

from shop import cart, keys


def test_whole_flow_by_api_register_login_add_change_checkout_orders_logout(api, redis_client):
    register(api, "alice")
    login(api, "alice")
    assert api.get("/api/me").get_json() == {"username": "alice"}

    products = api.get("/api/products").get_json()
    assert len(products) >= 10 and {"id", "name", "price_cents", "stock"} <= set(products[0])
    cup = next(p for p in products if p["id"] == "espresso-cup")

    assert (
        api.post("/api/cart/items", json={"product_id": "espresso-cup", "qty": 2}).status_code
        == 201
    )
    assert api.post("/api/cart/items", json={"product_id": "scale", "qty": 1}).status_code == 201
    assert api.put("/api/cart/items/espresso-cup", json={"qty": 3}).get_json()["qty"] == 3
    assert api.delete("/api/cart/items/scale").status_code == 204

    view = api.get("/api/cart").get_json()
    assert view == {
        "items": [
            {
                "product_id": "espresso-cup",
                "name": cup["name"],
                "qty": 3,
                "price_cents": cup["price_cents"],
                "subtotal_cents": 3 * cup["price_cents"],
            }
        ],
        "total_cents": 3 * cup["price_cents"],
    }

    response = api.post("/api/checkout")
    assert response.status_code == 201
    order = response.get_json()
    assert order["total_cents"] == 3 * cup["price_cents"]
    assert [(i["product_id"], i["qty"]) for i in order["items"]] == [("espresso-cup", 3)]
    assert int(redis_client.hget(keys.stock(), "espresso-cup")) == cup["stock"] - 3
    assert api.get("/api/cart").get_json() == {"items": [], "total_cents": 0}

    history = api.get("/api/orders").get_json()
    assert [o["order_id"] for o in history] == [order["order_id"]]

    assert api.post("/api/logout").status_code == 204
    assert api.get("/api/me").status_code == 401


def test_orders_are_listed_newest_first(api):
    register_and_login(api, "olga")
    placed = []
    for product in ("house-blend", "milk-jug"):
        api.post("/api/cart/items", json={"product_id": product, "qty": 1})
        placed.append(api.post("/api/checkout").get_json()["order_id"])
    assert [o["order_id"] for o in api.get("/api/orders").get_json()] == placed[::-1]


def test_logout_destroys_the_session_so_a_replayed_cookie_is_not_logged_in(shop_app):
    client = shop_app.test_client()
    register_and_login(client, "bob")
    stolen = session_cookie(client)
    assert client.post("/api/logout").status_code == 204

    attacker = shop_app.test_client()
    attacker.set_cookie("session", stolen)
    assert attacker.get("/api/me").status_code == 401


def test_login_regenerates_the_session_id_and_merges_the_anonymous_cart(api, redis_client):
    register(api, "carol")
    api.post("/api/cart/items", json={"product_id": "tamper", "qty": 1})
    before_login = session_cookie(api)
    assert before_login

    login(api, "carol")
    assert session_cookie(api) not in (None, before_login)
    items = api.get("/api/cart").get_json()["items"]
    assert [(i["product_id"], i["qty"]) for i in items] == [("tamper", 1)]
    # the anonymous cart is gone, the user's cart holds the line
    assert not [k for k in redis_client.scan_iter(keys.cart("a:*"))]


def test_merge_adds_quantities_and_caps_them_at_the_line_limit(shop_app):
    first = shop_app.test_client()
    register_and_login(first, "dora")
    first.post("/api/cart/items", json={"product_id": "house-blend", "qty": 60})

    second = shop_app.test_client()  # another device, anonymous
    second.post("/api/cart/items", json={"product_id": "house-blend", "qty": 50})
    second.post("/api/cart/items", json={"product_id": "scale", "qty": 2})
    login(second, "dora")
    lines = {i["product_id"]: i["qty"] for i in second.get("/api/cart").get_json()["items"]}
    assert lines == {"house-blend": cart.MAX_QTY, "scale": 2}


def test_anonymous_visitor_cart_expires_by_ttl_and_user_cart_does_not(
    shop_app, api, redis_client
):
    api.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    (anon_key,) = redis_client.scan_iter(keys.cart("a:*"))
    # No longer than the visitor's session can live: after that nobody reaches it.
    assert 0 < redis_client.ttl(anon_key) <= shop_app.config["SESSION_ABSOLUTE_TIMEOUT"]
    register_and_login(api, "erin")
    api.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    assert redis_client.ttl(keys.cart(keys.user_owner("1"))) == -1


def test_cart_refuses_more_than_99_per_line_and_more_than_50_lines(api, redis_client):
    register_and_login(api, "lena")
    assert api.post("/api/cart/items", json={"product_id": "scale", "qty": 99}).status_code == 201
    over = api.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    assert over.status_code == 409 and over.get_json()["error"] == "qty_limit"

    products = {
        f"extra-{n:02d}": json.dumps({"id": f"extra-{n:02d}", "name": "x", "price_cents": 1})
        for n in range(cart.MAX_LINES)
    }
    redis_client.hset(keys.products(), mapping=products)
    statuses = [
        api.post("/api/cart/items", json={"product_id": pid, "qty": 1}).status_code
        for pid in sorted(products)
    ]
    assert statuses == [201] * (cart.MAX_LINES - 1) + [409]
    assert len(api.get("/api/cart").get_json()["items"]) == cart.MAX_LINES


def test_setting_qty_zero_removes_the_line(api):
    api.post("/api/cart/items", json={"product_id": "scale", "qty": 2})
    assert api.put("/api/cart/items/scale", json={"qty": 0}).status_code == 200
    assert api.get("/api/cart").get_json()["items"] == []


def test_checkout_needs_login_and_a_non_empty_cart(api):
    assert api.post("/api/checkout").status_code == 401
    register_and_login(api, "fred")
    response = api.post("/api/checkout")
    assert response.status_code == 409 and response.get_json()["error"] == "empty_cart"
    assert api.get("/api/orders").get_json() == []


def test_checkout_short_of_stock_is_409_naming_the_lines_and_changes_nothing(api, redis_client):
    register_and_login(api, "gina")
    api.post("/api/cart/items", json={"product_id": "tamper", "qty": 2})  # 1 in stock
    api.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    stock_before = redis_client.hgetall(keys.stock())

    response = api.post("/api/checkout")
    assert response.status_code == 409
    body = response.get_json()
    assert body["error"] == "out_of_stock" and "Tamper" in body["message"]
    assert body["short"] == [
        {"product_id": "tamper", "name": "Tamper", "requested": 2, "available": 1}
    ]
    assert redis_client.hgetall(keys.stock()) == stock_before
    assert len(api.get("/api/cart").get_json()["items"]) == 2
    assert api.get("/api/orders").get_json() == []


def test_usernames_are_unique_regardless_of_case(api):
    register(api, "Hanna")
    response = api.post("/api/register", json={"username": "hANNA", "password": PASSWORD})
    assert response.status_code == 409 and response.get_json()["error"] == "username_taken"
    login(api, "hanna")
    assert api.get("/api/me").get_json() == {"username": "Hanna"}


def test_wrong_password_is_401_and_the_stored_password_is_a_werkzeug_hash(
    redis_server, redis_client
):
    app = make_app(redis_server.url, PASSWORD_HASH_METHOD="scrypt")
    client = app.test_client()
    register(client, "ivan")
    record = json.loads(redis_client.hget(keys.users(), "1"))
    assert record["password_hash"].startswith("scrypt:") and PASSWORD not in record["password_hash"]
    response = client.post("/api/login", json={"username": "ivan", "password": "wrong password"})
    assert response.status_code == 401 and response.get_json()["error"] == "bad_credentials"
    unknown = client.post("/api/login", json={"username": "nobody", "password": "wrong password"})
    assert unknown.get_json() == response.get_json()


def test_login_is_throttled_per_username_with_retry_after(redis_server, redis_client):
    app = make_app(redis_server.url, LOGIN_MAX_PER_USER=3, LOGIN_MAX_PER_IP=100)
    client = app.test_client()
    register(client, "judy")
    bad = {"username": "judy", "password": "not the password"}
    assert [client.post("/api/login", json=bad).status_code for _ in range(3)] == [401] * 3
    throttled = client.post("/api/login", json={"username": "judy", "password": PASSWORD})
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["Retry-After"]) <= 300
    # another name from the same address is not affected by judy's counter
    register(client, "kate")
    login(client, "kate")


def test_login_is_throttled_per_client_address(redis_server, redis_client):
    app = make_app(
        redis_server.url, LOGIN_MAX_PER_USER=100, LOGIN_MAX_PER_IP=2, TRUSTED_PROXIES=["127.0.0.1"]
    )
    client = app.test_client()
    register(client, "liam")
    via = {"X-Forwarded-For": "203.0.113.7"}  # from the trusted proxy (the test client's peer)
    for name in ("a-one", "a-two"):
        bad = {"username": name, "password": "whatever1"}
        assert client.post("/api/login", json=bad, headers=via).status_code == 401
    blocked = client.post(
        "/api/login", json={"username": "liam", "password": PASSWORD}, headers=via
    )
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers
    other = {"X-Forwarded-For": "203.0.113.8"}
    assert (
        client.post(
            "/api/login", json={"username": "liam", "password": PASSWORD}, headers=other
        ).status_code
        == 200
    )


def test_forwarded_for_from_an_untrusted_peer_is_ignored(redis_server, redis_client):
    app = make_app(redis_server.url, LOGIN_MAX_PER_IP=1)
    client = app.test_client()
    spoof = {"X-Forwarded-For": "198.51.100.1"}
    bad = {"username": "mike", "password": "whatever1"}
    environ = {"REMOTE_ADDR": "192.0.2.50"}
    client.post("/api/login", json=bad, headers=spoof, environ_base=environ)
    spoof["X-Forwarded-For"] = "198.51.100.2"  # a new made-up address does not reset the count
    again = client.post("/api/login", json=bad, headers=spoof, environ_base=environ)
    assert again.status_code == 429
    assert redis_client.get(keys.login_throttle_ip("192.0.2.50")) == "2"


@pytest.mark.parametrize("path", ["/api/me", "/api/products", "/healthz", "/nowhere", "/"])
def test_every_response_says_which_replica_served_it(api, path):
    response = api.get(path, headers={"X-Request-ID": "req-123"})
    assert response.headers["X-Served-By"] == "replica-a"
    assert response.headers["X-Request-ID"] == "req-123"


def test_unknown_api_path_and_wrong_method_are_json_errors(api):
    missing = api.get("/api/nothing")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    wrong = api.get("/api/checkout")
    assert wrong.status_code == 405 and wrong.get_json()["error"] == "method_not_allowed"


def test_health_and_readiness(api):
    assert api.get("/healthz").status_code == 200
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_catalog_seeding_only_adds_what_is_absent(redis_server, redis_client):
    make_app(redis_server.url)
    redis_client.hset(keys.stock(), "tamper", 0)  # sold out meanwhile
    redis_client.hdel(keys.products(), "gift-card")
    make_app(redis_server.url)  # another replica starting
    assert redis_client.hget(keys.stock(), "tamper") == "0"
    assert redis_client.hexists(keys.products(), "gift-card")
    stock = {k: int(v) for k, v in redis_client.hgetall(keys.stock()).items()}
    assert len(stock) >= 10 and sum(1 for v in stock.values() if 1 <= v <= 3) >= 2


def _flask_path(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def test_openapi_documents_every_api_route_and_nothing_else(shop_app, api):
    doc = api.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routes = {
        (_flask_path(rule.rule), method)
        for rule in shop_app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
        if rule.rule.startswith("/api/") or rule.rule in ("/healthz", "/readyz")
    }
    assert routes == documented


def test_the_session_cookie_is_http_only_and_same_site_lax(api):
    register(api, "nina")
    response = api.post("/api/login", json={"username": "nina", "password": PASSWORD})
    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header
