"""Bad input gets a clear 4xx and changes nothing in Redis (every key compared)."""

from __future__ import annotations

import secrets

import pytest
from markupsafe import escape
from shop_support import PASSWORD, form, register_and_login, snapshot, submit

JSON = "application/json"
CASES = [
    # (id, method, path, request kwargs, status, error code)
    ("malformed-json", "POST", "/api/cart/items", {"data": "{nope", "content_type": JSON}, 400,
     "malformed_json"),
    ("json-not-an-object", "POST", "/api/cart/items", {"json": [1, 2]}, 400, "bad_request"),
    ("form-encoded-body", "POST", "/api/cart/items", {"data": {"product_id": "scale", "qty": "1"}},
     415, "unsupported_media_type"),
    ("text-plain-body", "POST", "/api/login",
     {"data": '{"username":"x","password":"y"}', "content_type": "text/plain"}, 415,
     "unsupported_media_type"),
    ("no-content-type", "POST", "/api/cart/items", {"data": '{"product_id":"scale","qty":1}'}, 415,
     "unsupported_media_type"),
    ("qty-zero", "POST", "/api/cart/items", {"json": {"product_id": "scale", "qty": 0}}, 400,
     "bad_qty"),
    ("qty-negative", "POST", "/api/cart/items", {"json": {"product_id": "scale", "qty": -1}}, 400,
     "bad_qty"),
    ("qty-huge", "POST", "/api/cart/items", {"json": {"product_id": "scale", "qty": 10**9}}, 400,
     "bad_qty"),
    ("qty-string", "POST", "/api/cart/items", {"json": {"product_id": "scale", "qty": "abc"}}, 400,
     "bad_qty"),
    ("qty-numeric-string", "POST", "/api/cart/items", {"json": {"product_id": "scale", "qty": "2"}},
     400, "bad_qty"),
    ("qty-bool", "POST", "/api/cart/items", {"json": {"product_id": "scale", "qty": True}}, 400,
     "bad_qty"),
    ("qty-float", "POST", "/api/cart/items", {"json": {"product_id": "scale", "qty": 1.5}}, 400,
     "bad_qty"),
    ("qty-missing", "POST", "/api/cart/items", {"json": {"product_id": "scale"}}, 400, "bad_qty"),
    ("qty-over-line-limit", "POST", "/api/cart/items", {"json": {"product_id": "scale", "qty": 98}},
     409, "qty_limit"),
    ("product-id-number", "POST", "/api/cart/items", {"json": {"product_id": 7, "qty": 1}}, 400,
     "bad_product_id"),
    ("unknown-product", "POST", "/api/cart/items", {"json": {"product_id": "unicorn", "qty": 1}},
     404, "unknown_product"),
    ("markup-product-id", "POST", "/api/cart/items",
     {"json": {"product_id": "<script>", "qty": 1}}, 404, "unknown_product"),
    ("put-negative", "PUT", "/api/cart/items/scale", {"json": {"qty": -1}}, 400, "bad_qty"),
    ("put-huge", "PUT", "/api/cart/items/scale", {"json": {"qty": 100}}, 400, "bad_qty"),
    ("put-unknown-product", "PUT", "/api/cart/items/unicorn", {"json": {"qty": 1}}, 404,
     "unknown_product"),
    ("delete-unknown-product", "DELETE", "/api/cart/items/unicorn", {}, 404, "unknown_product"),
    ("register-name-not-string", "POST", "/api/register",
     {"json": {"username": ["x"], "password": PASSWORD}}, 400, "bad_username"),
    ("register-name-too-short", "POST", "/api/register",
     {"json": {"username": "ab", "password": PASSWORD}}, 400, "bad_username"),
    ("register-name-control-char", "POST", "/api/register",
     {"json": {"username": "bad\x00name", "password": PASSWORD}}, 400, "bad_username"),
    ("register-password-short", "POST", "/api/register",
     {"json": {"username": "newbie", "password": "short"}}, 400, "bad_password"),
    ("register-taken", "POST", "/api/register",
     {"json": {"username": "OWNER", "password": PASSWORD}}, 409, "username_taken"),
    ("login-wrong-types", "POST", "/api/login", {"json": {"username": 1, "password": None}}, 400,
     "bad_request"),
    ("oversized-body", "POST", "/api/cart/items",
     {"json": {"product_id": "scale", "qty": 1, "pad": "x" * 20_000}}, 413, "body_too_large"),
    ("idempotency-key-too-long", "POST", "/api/cart/items",
     {"json": {"product_id": "scale", "qty": 1}, "headers": {"Idempotency-Key": "k" * 201}}, 400,
     "bad_idempotency_key"),
    ("cross-site-request", "POST", "/api/checkout", {"headers": {"Sec-Fetch-Site": "cross-site"}},
     403, "cross_site"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_api_input_is_a_clear_4xx_and_changes_nothing(
    api, redis_client, method, path, kwargs, status, code
):
    register_and_login(api, "owner")
    assert api.post("/api/cart/items", json={"product_id": "scale", "qty": 2}).status_code == 201
    before = snapshot(redis_client)

    response = api.open(path, method=method, **kwargs)

    assert response.status_code == status
    body = response.get_json()
    assert body["error"] == code and body["message"]
    assert snapshot(redis_client) == before


@pytest.mark.parametrize(
    "cookie",
    [
        secrets.token_urlsafe(32),  # well formed, never issued
        "not a session id",
        "x" * 4000,
        "../../etc/passwd",
    ],
)
def test_forged_cookie_gives_a_fresh_empty_session_and_no_new_keys(api, redis_client, cookie):
    register_and_login(api, "victim")
    before = snapshot(redis_client)
    forger = api.application.test_client()
    forger.set_cookie("session", cookie)
    assert forger.get("/api/me").status_code == 401
    assert forger.get("/api/cart").get_json() == {"items": [], "total_cents": 0}
    assert snapshot(redis_client) == before
    # nor does a page with forms (its CSRF value is in a cookie of its own)
    assert forger.get("/").status_code == 200
    assert snapshot(redis_client) == before


def test_a_forged_cookie_is_never_adopted_as_a_session_id(api):
    forged = "A" * 43
    api.set_cookie("session", forged)
    api.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    assert api.get_cookie("session").value != forged


MARKUP_NAME = "<b>\"O'Hara\"&amp;</b>"


def test_markup_and_quotes_in_a_username_are_escaped_on_every_page(shop_app):
    browser = shop_app.test_client()
    response = submit(
        browser, "/register", "/register", username=MARKUP_NAME, password=PASSWORD
    )
    assert response.status_code == 303
    browser.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    submit(browser, "/cart", "/checkout")
    escaped = str(escape(MARKUP_NAME))
    for page in ("/", "/cart", "/orders", "/login", "/register", "/no-such-page"):
        text = browser.get(page).get_data(as_text=True)
        assert MARKUP_NAME not in text, page
        assert "<b>" not in text, page
        assert escaped in text, page
    assert browser.get("/api/me").get_json() == {"username": MARKUP_NAME}


def _catalog_form(client):
    page = client.get("/").get_data(as_text=True)
    return form(page, "/cart/add", product_id="scale").fields


@pytest.mark.parametrize(
    "token",
    [None, "", "forged-token", "IjA1YzY2ZjEwNmE2Yjk3ZjRiM2U0ZDY3In0.aaaa.bbbb"],
    ids=["missing", "empty", "garbage", "well-formed-but-wrong"],
)
def test_html_form_without_a_valid_csrf_token_is_refused_and_changes_nothing(
    shop_app, redis_client, token
):
    browser = shop_app.test_client()
    fields = {**_catalog_form(browser), "qty": "1"}
    before = snapshot(redis_client)
    if token is None:
        fields.pop("csrf_token")
    else:
        fields["csrf_token"] = token
    response = browser.post("/cart/add", data=fields)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "<h1>" in page and "reload the page" in page and "Traceback" not in page
    assert snapshot(redis_client) == before


def test_csrf_token_of_another_session_is_refused(shop_app, redis_client):
    alice, mallory = shop_app.test_client(), shop_app.test_client()
    alice_fields = _catalog_form(alice)
    mallory_fields = _catalog_form(mallory)
    before = snapshot(redis_client)
    forged = {**alice_fields, "csrf_token": mallory_fields["csrf_token"], "qty": "1"}
    assert alice.post("/cart/add", data=forged).status_code == 400
    assert snapshot(redis_client) == before


@pytest.mark.parametrize("qty", ["0", "-1", "1000000000", "abc", "", "1.5", "٣"])
def test_bad_qty_in_the_html_form_is_flashed_and_changes_nothing(shop_app, redis_client, qty):
    browser = shop_app.test_client()
    fields = {**_catalog_form(browser), "qty": qty}
    before = snapshot(redis_client, sessions=False)
    response = browser.post("/cart/add", data=fields, follow_redirects=True)
    assert response.status_code == 200
    assert "qty must be a whole number" in response.get_data(as_text=True)
    assert snapshot(redis_client, sessions=False) == before
