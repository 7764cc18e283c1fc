"""Two app instances (two replica names, one Redis): consistency, races, idempotency."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flask import Flask
from flask.testing import FlaskClient
from shop_support import PASSWORD, login, register, register_and_login

from shop import keys


class RoundRobinUser:
    """One user's cookie carried to alternating replicas, as nginx's round robin does."""

    def __init__(self, apps: tuple[Flask, ...]) -> None:
        self.clients = [app.test_client() for app in apps]
        self.turn = 0
        self.cookie: str | None = None
        self.served_by: list[str] = []

    def request(self, method: str, path: str, **kwargs):
        client = self.clients[self.turn % len(self.clients)]
        self.turn += 1
        if self.cookie is None:
            client.delete_cookie("session")
        else:
            client.set_cookie("session", self.cookie)
        response = client.open(path, method=method, **kwargs)
        cookie = client.get_cookie("session")
        self.cookie = cookie.value if cookie else None
        self.served_by.append(response.headers["X-Served-By"])
        return response


def test_alternate_replicas_serve_one_users_flow_consistently(shop_replicas, redis_client):
    user = RoundRobinUser(shop_replicas)
    credentials = {"username": "wendy", "password": PASSWORD}
    assert (
        user.request("POST", "/api/cart/items", json={"product_id": "scale", "qty": 1}).status_code
        == 201
    )
    assert user.request("POST", "/api/register", json=credentials).status_code == 201
    assert user.request("POST", "/api/login", json=credentials).status_code == 200
    assert user.request("GET", "/api/me").get_json() == {"username": "wendy"}
    assert (
        user.request("POST", "/api/cart/items", json={"product_id": "scale", "qty": 2}).status_code
        == 201
    )
    assert user.request("PUT", "/api/cart/items/scale", json={"qty": 4}).status_code == 200
    assert user.request("GET", "/api/cart").get_json()["items"][0]["qty"] == 4
    order = user.request("POST", "/api/checkout").get_json()
    assert [o["order_id"] for o in user.request("GET", "/api/orders").get_json()] == [
        order["order_id"]
    ]
    assert user.request("POST", "/api/logout").status_code == 204
    assert user.request("GET", "/api/me").status_code == 401
    assert set(user.served_by) == {"replica-a", "replica-b"}
    assert redis_client.hget(keys.stock(), "scale") == str(12 - 4)


def logged_in_on_both(apps: tuple[Flask, Flask], username: str) -> tuple[FlaskClient, ...]:
    """A client of each replica, both carrying one session of `username` (registered now)."""
    client_a, client_b = (app.test_client() for app in apps)
    register(client_a, username)
    login(client_a, username)
    client_b.set_cookie("session", client_a.get_cookie("session").value)
    return client_a, client_b


def _at_once(count: int, action: Callable[[int], object]) -> list:
    """Run `action(i)` for i in range(count) on threads released together by a barrier."""
    barrier = threading.Barrier(count)

    def run(i: int):
        barrier.wait(timeout=10)
        return action(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count), timeout=60))


def test_checkout_never_oversells_across_replicas(shop_replicas, redis_client):
    buyers = []
    for i in range(20):
        client = shop_replicas[i % 2].test_client()
        register(client, f"buyer{i:02d}")
        login(client, f"buyer{i:02d}")
        assert (
            client.post(
                "/api/cart/items", json={"product_id": "hand-grinder", "qty": 1}
            ).status_code
            == 201
        )
        buyers.append(client)
    redis_client.hset(keys.stock(), "hand-grinder", 3)

    statuses = _at_once(20, lambda i: buyers[i].post("/api/checkout").status_code)

    assert Counter(statuses) == {201: 3, 409: 17}
    assert redis_client.hget(keys.stock(), "hand-grinder") == "0"
    assert redis_client.hlen(keys.orders()) == 3


def test_same_add_to_cart_sent_twice_with_one_key_adds_once(api, redis_client):
    headers = {"Idempotency-Key": "add-scale-1"}
    body = {"product_id": "scale", "qty": 2}
    first = api.post("/api/cart/items", json=body, headers=headers)
    second = api.post("/api/cart/items", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json() == {"product_id": "scale", "qty": 2}
    assert api.get("/api/cart").get_json()["items"][0]["qty"] == 2
    # a new key is a new request
    api.post("/api/cart/items", json=body, headers={"Idempotency-Key": "add-scale-2"})
    assert api.get("/api/cart").get_json()["items"][0]["qty"] == 4


def test_same_key_sent_concurrently_to_two_replicas_adds_once(shop_replicas, redis_client):
    client_a, client_b = logged_in_on_both(shop_replicas, "xena")
    clients = [client_a, client_b] * 4
    headers = {"Idempotency-Key": "9b7c1d1e-2f0a-4c55-8a52-3a1f0b7e6d10"}

    responses = _at_once(
        8,
        lambda i: clients[i].post(
            "/api/cart/items", json={"product_id": "scale", "qty": 3}, headers=headers
        ),
    )

    assert {r.status_code for r in responses} == {201}
    assert {r.get_json()["qty"] for r in responses} == {3}
    assert {r.headers["X-Served-By"] for r in responses} == {"replica-a", "replica-b"}
    assert client_a.get("/api/cart").get_json()["items"][0]["qty"] == 3


def test_same_key_with_a_different_body_is_422_and_changes_nothing(api):
    headers = {"Idempotency-Key": "k-1"}
    api.post("/api/cart/items", json={"product_id": "scale", "qty": 1}, headers=headers)
    reused = api.post("/api/cart/items", json={"product_id": "scale", "qty": 5}, headers=headers)
    assert reused.status_code == 422 and reused.get_json()["error"] == "idempotency_key_reused"
    other_path = api.put("/api/cart/items/scale", json={"qty": 1}, headers=headers)
    assert other_path.status_code == 422
    assert api.get("/api/cart").get_json()["items"][0]["qty"] == 1


def test_idempotent_checkout_replays_the_first_order(api, redis_client):
    register(api, "yara")
    login(api, "yara")
    api.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    headers = {"Idempotency-Key": "checkout-1"}
    first = api.post("/api/checkout", headers=headers)
    api.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    again = api.post("/api/checkout", headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json()
    assert redis_client.hlen(keys.orders()) == 1
    assert len(api.get("/api/cart").get_json()["items"]) == 1  # the new line is untouched


def test_idempotency_keys_are_scoped_per_user(shop_app):
    alice, bob = shop_app.test_client(), shop_app.test_client()
    for client, name in ((alice, "ann"), (bob, "ben")):
        register(client, name)
        login(client, name)
    headers = {"Idempotency-Key": "shared-key"}
    for client in (alice, bob):
        response = client.post(
            "/api/cart/items", json={"product_id": "scale", "qty": 1}, headers=headers
        )
        assert response.status_code == 201
        assert client.get("/api/cart").get_json()["items"][0]["qty"] == 1


def test_idempotency_records_expire_after_a_day(api, redis_client):
    register_and_login(api, "ida")  # an anonymous visitor's expire with its session (12 h)
    api.post(
        "/api/cart/items", json={"product_id": "scale", "qty": 1}, headers={"Idempotency-Key": "t"}
    )
    (record,) = redis_client.scan_iter(keys.PREFIX + "idem:*")
    assert 23 * 3600 < redis_client.ttl(record) <= 24 * 3600


def test_a_registration_resent_to_another_replica_without_a_cookie_is_answered_once(
    shop_replicas, redis_client
):
    """What nginx does when the first attempt timed out: the same request, same key,
    to another replica; the client has no session cookie yet, so the copy comes as a
    new visitor and must still get the first answer, not "name taken"."""
    first, resent = (app.test_client(use_cookies=False) for app in shop_replicas)
    body, headers = {"username": "yuki", "password": PASSWORD}, {"Idempotency-Key": "reg-1"}
    applied = first.post("/api/register", json=body, headers=headers)
    replayed = resent.post("/api/register", json=body, headers=headers)
    assert applied.status_code == replayed.status_code == 201
    assert replayed.get_json() == applied.get_json()
    assert redis_client.hlen(keys.users()) == 1
    other = dict(body, password=PASSWORD + "!")  # the same key, another body: not a replay
    assert resent.post("/api/register", json=other, headers=headers).status_code == 422
    fresh = resent.post("/api/register", json=body, headers={"Idempotency-Key": "reg-2"})
    assert fresh.status_code == 409  # a new request for a taken name is still refused


def test_concurrent_registrations_of_one_name_make_one_user(shop_replicas, redis_client):
    clients = [shop_replicas[i % 2].test_client() for i in range(6)]
    statuses = _at_once(
        6,
        lambda i: (
            clients[i]
            .post("/api/register", json={"username": "zoe", "password": PASSWORD})
            .status_code
        ),
    )
    assert sorted(statuses) == [201] + [409] * 5
    assert redis_client.hlen(keys.users()) == 1


def test_concurrent_adds_on_two_replicas_to_one_cart_are_all_counted(shop_replicas):
    client_a, client_b = logged_in_on_both(shop_replicas, "quentin")
    clients = [client_a, client_b] * 5
    _at_once(
        10, lambda i: clients[i].post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    )
    assert client_b.get("/api/cart").get_json()["items"][0]["qty"] == 10
