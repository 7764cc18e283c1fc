"""The HTML shop through its forms, as a browser with no JavaScript uses it (CSRF on)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from shop_support import PASSWORD, form, forms, register, snapshot, submit, text_of

from shop import keys


def flashes(page: str) -> list[str]:
    return [m.strip() for m in re.findall(r'<p class="flash[^"]*">(.*?)</p>', page, re.S)]


def test_whole_flow_by_html_forms(shop_app, redis_client):
    browser = shop_app.test_client()
    response = submit(browser, "/register", "/register", username="paula", password=PASSWORD)
    assert response.status_code == 303
    page = browser.get(response.location).get_data(as_text=True)
    assert flashes(page) == ["Welcome, paula! Your account is ready."]
    assert text_of(page, "signed-in-as") == "paula"

    response = submit(browser, "/", "/cart/add", {"product_id": "hand-grinder"}, qty="2")
    assert response.status_code == 303
    submit(browser, "/", "/cart/add", {"product_id": "milk-jug"}, qty="1")
    submit(browser, "/cart", "/cart/update", {"product_id": "hand-grinder"}, qty="3")
    submit(browser, "/cart", "/cart/remove", {"product_id": "milk-jug"})

    cart_page = browser.get("/cart").get_data(as_text=True)
    assert text_of(cart_page, "cart-total") == "€207.00"
    assert 'id="line-milk-jug"' not in cart_page
    assert text_of(cart_page, "cart-count") == "3"

    response = submit(browser, "/cart", "/checkout")
    assert response.status_code == 303 and response.location.endswith("/orders")
    orders_page = browser.get("/orders").get_data(as_text=True)
    assert "Order #1" in orders_page and "Hand grinder" in orders_page
    assert flashes(orders_page) == ["Thank you! Order #1 is placed: €207.00."]
    assert redis_client.hget(keys.stock(), "hand-grinder") == "0"

    response = submit(browser, "/", "/logout")
    assert response.status_code == 303
    page = browser.get("/").get_data(as_text=True)
    assert flashes(page) == ["You are logged out."] and 'id="signed-in-as"' not in page
    assert browser.get("/api/me").status_code == 401


def test_html_login_merges_the_anonymous_cart_and_follows_next(shop_app):
    browser = shop_app.test_client()
    register(browser, "quinn")
    submit(browser, "/", "/cart/add", {"product_id": "tamper"}, qty="1")
    response = submit(browser, "/login?next=/cart", "/login", username="quinn", password=PASSWORD)
    assert response.status_code == 303 and response.location == "/cart"
    assert 'id="line-tamper"' in browser.get("/cart").get_data(as_text=True)


def test_login_never_redirects_off_site(shop_app):
    browser = shop_app.test_client()
    register(browser, "rita")
    response = submit(
        browser, "/login?next=//evil.example/", "/login", username="rita", password=PASSWORD
    )
    assert response.status_code == 303 and response.location == "/"


def test_wrong_password_in_the_form_shows_the_error_with_status_401(shop_app):
    browser = shop_app.test_client()
    register(browser, "sam")
    response = submit(browser, "/login", "/login", username="sam", password="wrong password")
    assert response.status_code == 401
    assert flashes(response.get_data(as_text=True)) == ["Wrong username or password."]


def test_checkout_and_orders_send_an_anonymous_visitor_to_login(shop_app):
    browser = shop_app.test_client()
    submit(browser, "/", "/cart/add", {"product_id": "scale"}, qty="1")
    cart_page = browser.get("/cart").get_data(as_text=True)
    assert "to check out" in cart_page
    assert browser.get("/orders").location.startswith("/login?next=")


def test_out_of_stock_checkout_is_flashed_on_the_cart_page(shop_app, redis_client):
    browser = shop_app.test_client()
    submit(browser, "/register", "/register", username="tara", password=PASSWORD)
    submit(browser, "/", "/cart/add", {"product_id": "tamper"}, qty="2")
    response = submit(browser, "/cart", "/checkout")
    assert response.location.endswith("/cart")
    page = browser.get("/cart").get_data(as_text=True)
    assert flashes(page) == ["Not enough stock for: Tamper (1 left, 2 wanted)."]
    assert redis_client.hget(keys.stock(), "tamper") == "1"


def test_resubmitting_a_form_with_its_idempotency_key_applies_once(shop_app):
    browser = shop_app.test_client()
    page = browser.get("/").get_data(as_text=True)
    fields = {**form(page, "/cart/add", product_id="scale").fields, "qty": "2"}
    assert fields["idempotency_key"]
    first = browser.post("/cart/add", data=fields)
    second = browser.post("/cart/add", data=fields)  # back button + submit again
    assert first.status_code == second.status_code == 303
    items = browser.get("/api/cart").get_json()["items"]
    assert [(i["product_id"], i["qty"]) for i in items] == [("scale", 2)]


def test_every_form_carries_csrf_and_a_fresh_idempotency_key(shop_app):
    browser = shop_app.test_client()
    register(browser, "uma")
    browser.post("/api/login", json={"username": "uma", "password": PASSWORD})
    browser.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    keys_seen = []
    for path in ("/", "/cart", "/login", "/register"):
        for found in forms(browser.get(path).get_data(as_text=True)):
            assert found.fields.get("csrf_token"), (path, found.action)
            keys_seen.append(found.fields["idempotency_key"])
    assert len(keys_seen) == len(set(keys_seen)) > 10


def test_footer_shows_the_replica_and_the_session_age(shop_replicas):
    app_a, app_b = shop_replicas
    browser = app_a.test_client()
    page = browser.get("/").get_data(as_text=True)
    assert text_of(page, "served-by") == "replica-a"
    assert text_of(page, "session-age") == "new"
    assert browser.get_cookie("session") is None  # only looking makes no session
    submit(browser, "/", "/cart/add", {"product_id": "tamper"}, qty="1")
    cookie = browser.get_cookie("session").value

    other = app_b.test_client()
    other.set_cookie("session", cookie)
    page = other.get("/cart").get_data(as_text=True)
    assert text_of(page, "served-by") == "replica-b"
    assert re.fullmatch(r"\d+ s", text_of(page, "session-age"))


def test_prices_are_shown_formatted_from_integer_cents(shop_app):
    page = shop_app.test_client().get("/").get_data(as_text=True)
    assert "€8.50" in page and "€5.99" in page and "Only 1 left" in page


class _Structure(HTMLParser):
    """Collects headings, inputs and labels to check the page's accessible structure."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[int] = []
        self.inputs: list[dict[str, str]] = []
        self.label_for: set[str] = set()
        self.lang = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        elif tag == "input":
            self.inputs.append(values)
        elif tag == "label":
            self.label_for.add(values.get("for", ""))
        elif tag == "html":
            self.lang = values.get("lang", "")


@pytest.mark.parametrize("path", ["/", "/cart", "/orders", "/login", "/register", "/missing"])
def test_pages_have_labelled_inputs_and_headings_in_order(shop_app, path):
    browser = shop_app.test_client()
    register(browser, "vera")
    browser.post("/api/login", json={"username": "vera", "password": PASSWORD})
    browser.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    browser.post("/api/checkout")
    browser.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    structure = _Structure()
    structure.feed(browser.get(path).get_data(as_text=True))
    assert structure.lang == "en"
    assert structure.headings[0] == 1 and structure.headings.count(1) == 1
    for before, after in zip(structure.headings, structure.headings[1:], strict=False):
        assert after <= before + 1, structure.headings
    for field in structure.inputs:
        if field.get("type") != "hidden":
            assert field.get("id") in structure.label_for, field


def test_not_found_is_a_friendly_page(shop_app):
    response = shop_app.test_client().get("/no/such/page")
    page = response.get_data(as_text=True)
    assert response.status_code == 404 and "<h1>Page not found</h1>" in page
    assert text_of(page, "served-by") == "replica-a"


def test_oversized_form_is_a_friendly_413_and_changes_nothing(shop_app, redis_client):
    browser = shop_app.test_client()
    page = browser.get("/").get_data(as_text=True)
    fields = {**form(page, "/cart/add", product_id="scale").fields, "qty": "1"}
    before = snapshot(redis_client)
    response = browser.post("/cart/add", data={**fields, "pad": "x" * 20_000})
    assert response.status_code == 413 and "<h1>That was too large</h1>" in response.get_data(
        as_text=True
    )
    assert snapshot(redis_client) == before


def test_static_stylesheet_is_served_locally_and_pages_fetch_nothing_from_outside(shop_app):
    browser = shop_app.test_client()
    css = browser.get("/static/style.css")
    assert css.status_code == 200 and ":focus-visible" in css.get_data(as_text=True)
    page = browser.get("/").get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', page)
