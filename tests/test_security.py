"""What a hostile user tried against the app itself, and what holds now (issue 18).

Each test here failed on the code before the fix it protects: an open redirect
after login, usernames told apart by timing, a JSON body nested deep enough to
crash the parser, a login throttle a stranger could use to lock the owner out,
X-Forwarded-For believed from whoever sent it, and anonymous visitors costing
Redis memory at a bot's pace. The cluster-level defences (Redis password,
replicas reachable only from nginx, slow clients) are in
tests/test_cluster_security.py; nginx's own answers in tests/test_nginx_config.py.
"""

from __future__ import annotations

import json
import statistics
import time

import pytest
from shop_support import PASSWORD, form, make_app, register, snapshot, submit

from shop import cart, csrf, heartbeat, keys, scalelog
from shop.proxy import TrustedProxyFix

# -- 1. open redirect after login ---------------------------------------------

OFF_SITE = [
    "/%09/evil.example",  # a tab after the slash: browsers drop it, leaving //evil.example
    "/%0a/evil.example",  # a newline (was a 500: Werkzeug refuses it in a header)
    "/%0d/evil.example",
    "//evil.example/",
    "/%5Cevil.example",  # "/\evil.example": a backslash, which browsers read as "/"
    "/%20/evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "%2F%2Fevil.example",
]


@pytest.mark.parametrize("next_value", OFF_SITE)
def test_login_sends_anything_but_a_local_path_home(shop_app, next_value):
    browser = shop_app.test_client()
    register(browser, "rita")
    page = browser.get(f"/login?next={next_value}")
    assert page.status_code == 200
    response = submit(
        browser, f"/login?next={next_value}", "/login", password=PASSWORD, username="rita"
    )
    assert response.status_code == 303 and response.location == "/"


@pytest.mark.parametrize("path", ["/cart", "/orders?page=2", "/cart/", "/a-b_c.d~e"])
def test_login_still_follows_a_local_path(shop_app, path):
    browser = shop_app.test_client()
    register(browser, "sven")
    response = submit(browser, f"/login?next={path}", "/login", username="sven", password=PASSWORD)
    assert response.status_code == 303 and response.location == path


# -- 2. username enumeration by timing ------------------------------------------

# A hash slow enough that one more of it dwarfs a Redis round trip and the
# machine's noise (about 20 ms here), cheap enough for a few tries.
SLOW_HASH = "pbkdf2:sha256:60000"
TRIES = 7


def test_an_unknown_name_costs_the_same_one_hash_as_a_wrong_password(redis_server, redis_client):
    app = make_app(
        redis_server.url,
        PASSWORD_HASH_METHOD=SLOW_HASH,
        LOGIN_MAX_PER_USER=100,
        LOGIN_MAX_PER_IP=100,
    )
    client = app.test_client()
    register(client, "known-user")

    def seconds(username: str) -> float:
        start = time.perf_counter()
        response = client.post("/api/login", json={"username": username, "password": "wrong pw 1"})
        elapsed = time.perf_counter() - start
        assert response.status_code == 401
        return elapsed

    seconds("warm-up-name")  # the dummy hash is made once, on first use
    known, unknown = [], []
    for attempt in range(TRIES):  # interleaved, so a noisy moment hits both alike
        known.append(seconds("known-user"))
        unknown.append(seconds(f"nobody-{attempt}"))
    ratio = statistics.median(unknown) / statistics.median(known)
    # Two hashes against one was a ratio of 2; equal work is 1 give or take noise.
    assert 0.67 < ratio < 1.5, (ratio, known, unknown)


# -- 5. deeply nested JSON ------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * 1000 + "]" * 1000,
        '{"username":' + "[" * 5000 + "]" * 5000 + "}",
        '{"a":' * 1000 + "1" + "}" * 1000,
    ],
    ids=["arrays", "inside-a-member", "objects"],
)
@pytest.mark.parametrize("path", ["/api/login", "/api/register", "/api/cart/items"])
def test_deeply_nested_json_is_a_400_not_a_crash(api, redis_client, body, path):
    before = snapshot(redis_client)
    response = api.post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"] == "malformed_json"
    assert snapshot(redis_client) == before


def test_brackets_inside_strings_do_not_count_as_nesting(api):
    name = "[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{"[:32]
    response = api.post("/api/register", json={"username": name, "password": PASSWORD})
    assert response.status_code == 201


def test_a_member_an_endpoint_does_not_take_is_refused(api, redis_client):
    before = snapshot(redis_client)
    response = api.post(
        "/api/register", json={"username": "ursula", "password": PASSWORD, "admin": True}
    )
    assert response.status_code == 400 and response.get_json()["error"] == "unknown_field"
    assert snapshot(redis_client) == before


# -- 6. a throttle that slows guessing but locks nobody out ---------------------


def throttled_app(redis_server, **limits):
    # Requests arrive as from nginx on 127.0.0.1, which forwards each client's address.
    return make_app(redis_server.url, TRUSTED_PROXIES=["127.0.0.1"], **limits)


def login_from(client, address: str, password: str, username: str = "owner"):
    return client.post(
        "/api/login",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": address},
    )


def test_a_stranger_guessing_cannot_lock_the_owner_out(redis_server, redis_client):
    app = throttled_app(redis_server, LOGIN_MAX_PER_USER=5, LOGIN_MAX_PER_IP=100)
    attacker, owner = app.test_client(), app.test_client()
    register(owner, "owner")
    for _ in range(6):
        login_from(attacker, "198.51.100.66", "wrong guess")
    response = login_from(owner, "203.0.113.10", PASSWORD)
    assert response.status_code == 200, response.get_json()


def test_guessing_one_name_from_one_source_is_still_throttled(redis_server, redis_client):
    app = throttled_app(redis_server, LOGIN_MAX_PER_USER=5, LOGIN_MAX_PER_IP=100)
    client = app.test_client()
    register(client, "owner")
    statuses = [login_from(client, "198.51.100.66", f"guess {i}").status_code for i in range(5)]
    assert statuses == [401] * 5
    # The sixth try is refused before the password is looked at: even the right one.
    throttled = login_from(client, "198.51.100.66", PASSWORD)
    assert throttled.status_code == 429 and 0 < int(throttled.headers["Retry-After"]) <= 300


def test_rotating_names_from_one_source_meets_the_per_source_limit(redis_server, redis_client):
    app = throttled_app(redis_server, LOGIN_MAX_PER_USER=5, LOGIN_MAX_PER_IP=4)
    client = app.test_client()
    statuses = [
        login_from(client, "198.51.100.66", "guess", username=f"name-{i}").status_code
        for i in range(5)
    ]
    assert statuses == [401, 401, 401, 401, 429]


def test_an_ipv6_client_counts_as_its_slash_64(redis_server, redis_client):
    app = throttled_app(redis_server, LOGIN_MAX_PER_USER=2, LOGIN_MAX_PER_IP=100)
    client = app.test_client()
    statuses = [
        login_from(client, f"2001:db8:1:2::{i:x}", "guess").status_code for i in range(1, 4)
    ]
    assert statuses == [401, 401, 429]
    assert redis_client.exists(keys.login_throttle_ip("2001:db8:1:2::/64"))


# -- X-Forwarded-For only from configured proxies ----------------------------------


def test_by_default_no_tcp_peer_is_believed_not_even_loopback(redis_server, redis_client):
    app = make_app(redis_server.url, LOGIN_MAX_PER_IP=1)
    client = app.test_client()
    bad = {"username": "mike", "password": "whatever1"}
    # A local process talking to a replica's port directly, inventing addresses:
    for made_up in ("198.51.100.1", "198.51.100.2"):
        last = client.post("/api/login", json=bad, headers={"X-Forwarded-For": made_up})
    assert last.status_code == 429
    assert redis_client.get(keys.login_throttle_ip("127.0.0.1")) == "2"


@pytest.mark.parametrize(
    ("trusted", "peer", "believed"),
    [
        (["10.42.0.0/16"], "10.42.7.9", True),
        (["10.42.0.0/16"], "10.43.0.1", False),
        (["127.0.0.1"], "127.0.0.1", True),
        (["127.0.0.1"], "127.0.0.2", False),
        (["198.18.0.0/24", "198.18.1.5"], "198.18.1.5", True),
        (["fd00::/8"], "fd12::1", True),
        (["127.0.0.0/8"], "::ffff:127.0.0.1", True),
        (["unix"], "", True),
        (["10.0.0.0/8"], "", False),
        (["unix"], "127.0.0.1", False),
    ],
)
def test_trusted_proxies_are_addresses_cidr_ranges_or_unix_socket_peers(trusted, peer, believed):
    assert TrustedProxyFix(None, trusted).is_trusted(peer) is believed


def test_a_malformed_trusted_proxy_entry_stops_the_app_with_its_name(redis_server):
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        make_app(redis_server.url, TRUSTED_PROXIES=["10.0.0.0/33"])


# -- 7. anonymous visitors cost Redis nothing until they do something -------------

PAGES = ["/", "/login", "/register", "/cart"]


def test_looking_at_pages_stores_nothing_in_redis(shop_app, redis_client):
    before = snapshot(redis_client)
    for _ in range(5):  # five bots without cookies, every page with a form
        bot = shop_app.test_client()
        for page in PAGES:
            response = bot.get(page)
            assert response.status_code == 200
            assert bot.get_cookie("session") is None
        assert bot.get_cookie(csrf.COOKIE_NAME) is not None  # the forms' value, client-side
    assert snapshot(redis_client) == before


def test_a_visitor_with_only_the_csrf_cookie_can_post_and_older_tabs_keep_working(
    shop_app, redis_client
):
    browser = shop_app.test_client()
    first_tab = form(browser.get("/").get_data(as_text=True), "/cart/add", product_id="tamper")
    second_tab = form(browser.get("/").get_data(as_text=True), "/cart/add", product_id="tamper")
    assert browser.post("/cart/add", data={**first_tab.fields, "qty": "1"}).status_code == 303
    browser.get("/")  # the first page drawn with a session binds the value to it
    # The session exists now; the form of the tab opened before it still works.
    assert browser.post("/cart/add", data={**second_tab.fields, "qty": "1"}).status_code == 303
    assert "tamper" in str(browser.get("/api/cart").get_json())


def test_a_form_token_from_before_login_is_worthless_after_it(shop_app):
    browser = shop_app.test_client()
    register(browser, "tina")
    before_login = form(browser.get("/").get_data(as_text=True), "/cart/add", product_id="tamper")
    submit(browser, "/login", "/login", username="tina", password=PASSWORD)
    refused = browser.post("/cart/add", data={**before_login.fields, "qty": "1"})
    assert refused.status_code == 400
    assert submit(browser, "/", "/cart/add", {"product_id": "tamper"}, qty="1").status_code == 303


def test_anonymous_carts_are_bounded_in_lines_and_in_time(shop_app, api, redis_client):
    products = {
        f"extra-{n:02d}": json.dumps({"id": f"extra-{n:02d}", "name": "x", "price_cents": 1})
        for n in range(cart.MAX_VISITOR_LINES + 1)
    }
    redis_client.hset(keys.products(), mapping=products)
    statuses = [
        api.post(
            "/api/cart/items",
            json={"product_id": pid, "qty": 1},
            headers={"Idempotency-Key": f"add-{pid}"},
        ).status_code
        for pid in sorted(products)
    ]
    assert statuses == [201] * cart.MAX_VISITOR_LINES + [409]
    lifetime = shop_app.config["SESSION_ABSOLUTE_TIMEOUT"]
    (cart_key,) = redis_client.scan_iter(keys.cart("a:*"))
    assert 0 < redis_client.ttl(cart_key) <= lifetime
    records = list(redis_client.scan_iter(f"{keys.PREFIX}idem:a:*"))
    assert records and all(0 < redis_client.ttl(r) <= lifetime for r in records)


# -- what a stranger may see of the cluster ------------------------------------------

STRANGER = {"REMOTE_ADDR": "203.0.113.99"}


@pytest.fixture
def beating(redis_client):
    for name in ("shop-1", "shop-2"):
        heartbeat.Heartbeat(redis_client, name, lambda: 5, started=1000.0).beat()
    # The autoscaler's record tells the load too (what its process writes).
    policy = {"minimum": 1, "maximum": 3, "target": 4.0, "window": 3.0,
              "down_window": 15.0, "cooldown": 10.0, "band": 0.7}  # fmt: skip
    scalelog.record(redis_client, {"at": 1000.0, "action": "up", "from": 1, "to": 2,
                                   "reason": "9.0 requests in flight", "in_flight": 9.0,
                                   "took": 4.2})  # fmt: skip
    scalelog.publish(redis_client, {"pid": 1, "updated": 1001.0, "policy": policy,
                                    "replicas": 2, "in_flight": 9.0, "per_replica": 4.5,
                                    "outlook": "steady"})  # fmt: skip


def test_a_stranger_sees_only_names_and_alive_or_gone(shop_app, beating):
    client = shop_app.test_client()
    body = client.get("/api/cluster", environ_base=STRANGER).get_json()
    assert body["details"] is False
    assert body["replicas"] == [
        {"name": "shop-1", "alive": True},
        {"name": "shop-2", "alive": True},
    ]
    assert body["autoscale"] is None
    page = client.get("/cluster", environ_base=STRANGER).get_data(as_text=True)
    assert "shop-2" in page and "Uptime" not in page and "Requests" not in page
    assert "Autoscaling" not in page and "in flight" not in page
    assert "store" not in body  # the Redis nodes' addresses are details too
    assert 'id="store"' not in page


def test_the_cluster_host_and_a_flagged_deployment_see_the_details(
    redis_server, redis_client, shop_app, beating
):
    from_host = shop_app.test_client().get("/api/cluster").get_json()  # 127.0.0.1
    assert from_host["details"] and from_host["replicas"][0]["pids"]
    assert from_host["store"]["address"] == f"127.0.0.1:{redis_server.port}"
    assert from_host["autoscale"]["reading"]["summary"].startswith("2 replicas (range 1 to 3")
    assert from_host["autoscale"]["decisions"][0]["summary"] == "up 1 → 2"
    page = shop_app.test_client().get("/cluster").get_data(as_text=True)
    assert "up 1 → 2" in page and "9.0 requests in flight" in page and "4.2 s" in page
    flagged = make_app(redis_server.url, CLUSTER_DETAILS=True).test_client()
    body = flagged.get("/api/cluster", environ_base=STRANGER).get_json()
    assert body["details"] and body["replicas"][0]["requests_total"] == 5
