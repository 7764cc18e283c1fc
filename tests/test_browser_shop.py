"""The shop in real Chromium, through nginx, on a 3-replica cluster started by
the launcher: a replica is killed mid-purchase and the shopper notices nothing.

Each test saves a screenshot of every step under test-output/browser/<test>/
(printed; see with `pytest -s`). With SHOP_UPDATE_SCREENSHOTS=1 the kill test
also refreshes the two README screenshots in docs/.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import (  # noqa: F401 - fixtures are found by name
    Shopper,
    accessibility_problems,
    browser_fixture,
    new_context,
    shots_fixture,
)
from cluster_support import Launcher, running_cluster

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

DOCS = Path(__file__).resolve().parent.parent / "docs"
PASSWORD = "correct horse battery"
# Products with plenty of stock, so the tests never run a product out.
CUP, FILTERS, BEANS, MUG = "espresso-cup", "paper-filters", "house-blend", "travel-mug"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    with running_cluster(tmp_path_factory.mktemp("browser-cluster"), replicas=3) as launcher:
        yield launcher


@pytest.fixture
def shopper_factory(browser, cluster: Launcher, shots) -> Iterator:
    """`shopper_factory(javascript=True)` gives a Shopper in a fresh browser
    context (own cookies); every context is closed when the test ends."""
    contexts = []

    def make(*, javascript: bool = True) -> Shopper:
        context = new_context(browser, java_script_enabled=javascript)
        contexts.append(context)
        return Shopper(context.new_page(), cluster.url, shots)

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def shopper(shopper_factory) -> Shopper:
    return shopper_factory()


def new_username() -> str:
    return f"bt-{uuid.uuid4().hex[:12]}"


def alive_replicas(cluster: Launcher) -> set[str]:
    return {r["name"] for r in cluster.status()["replicas"] if r["alive"]}


def keep_for_readme(shot: Path, name: str) -> None:
    if os.environ.get("SHOP_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, DOCS / name)
        print(f"updated {DOCS / name}")


def test_a_replica_killed_mid_purchase_loses_neither_the_cart_nor_the_login(
    shopper: Shopper, cluster: Launcher
) -> None:
    username = new_username()
    shopper.open("/")
    shopper.shot("catalog")
    keep_for_readme(shopper.shots.saved[-1], "screenshot-catalog.png")

    shopper.register(username, PASSWORD)
    shopper.shot("registered")
    shopper.log_out()
    shopper.log_in(username, PASSWORD)
    shopper.shot("logged-in")

    for product_id in (CUP, FILTERS, BEANS):
        shopper.add(product_id)
    shopper.shot("added-three")
    assert shopper.cart() == {CUP: 1, FILTERS: 1, BEANS: 1}
    shopper.set_qty(FILTERS, 3)
    before = shopper.cart_on_page()
    total = shopper.page.locator("#cart-total").inner_text()
    assert before == {CUP: 1, FILTERS: 3, BEANS: 1}
    victim = shopper.served_by()
    shopper.shot(f"cart-served-by-{victim}")

    cluster.run("kill", victim)
    try:
        assert victim not in alive_replicas(cluster), f"{victim} still runs after kill"

        shopper.page.reload()
        shopper.shot(f"cart-after-killing-{victim}")
        keep_for_readme(shopper.shots.saved[-1], "screenshot-cart-after-kill.png")
        assert shopper.cart_on_page() == before, "the cart changed when a replica died"
        assert shopper.page.locator("#cart-total").inner_text() == total
        assert shopper.signed_in_as() == username, "the login was lost when a replica died"
        assert shopper.served_by() != victim

        order_id = shopper.check_out()
        shopper.shot("order-placed")
        assert shopper.orders() == {
            order_id: {"Espresso cup": 1, "Paper filters (100)": 3, "House blend, 250 g": 1}
        }
        assert shopper.signed_in_as() == username
        shopper.shot("order-history")
        shopper.log_out()
        shopper.open("/orders")
        assert "/login" in shopper.page.url, "the order history is shown after logging out"
        shopper.shot("logged-out")
    finally:  # back in rotation for the next tests; never hide this test's own failure
        cluster.run("start", victim, check=False)


def test_the_anonymous_cart_merges_into_the_users_cart_at_login(shopper: Shopper) -> None:
    username = new_username()
    shopper.register(username, PASSWORD)
    shopper.add(MUG)
    shopper.log_out()
    assert shopper.cart() == {}, "the user's cart shows after logging out"

    shopper.add(MUG, 2)
    shopper.add(BEANS)
    assert shopper.cart() == {MUG: 2, BEANS: 1}
    shopper.shot("anonymous-cart")
    shopper.log_in(username, PASSWORD)
    assert shopper.cart() == {MUG: 3, BEANS: 1}
    shopper.shot("merged-cart")


def test_a_form_the_browser_sends_twice_adds_once(shopper: Shopper) -> None:
    """The response to an add is lost on its way back (the shop did the add);
    the shopper reloads, and Chromium posts the very same form again, same
    idempotency key: the shop answers as the first time and adds nothing."""
    shopper.open("/")
    sent = []
    shopper.page.on(
        "request", lambda r: sent.append(r.post_data) if r.url.endswith("/cart/add") else None
    )

    def lose_the_response(route) -> None:
        answered = route.fetch(max_redirects=0)  # the shop receives and applies it
        assert answered.status == 303
        route.fulfill(status=502, content_type="text/plain", body="502 Bad Gateway")

    shopper.page.route("**/cart/add", lose_the_response, times=1)
    response = shopper.submit(shopper.add_form(CUP).get_by_role("button"))
    assert response.status == 502
    shopper.shot("response-lost")

    shopper.page.reload()  # Chromium resubmits the POST as it was
    shopper.shot("resubmitted")
    assert len(sent) == 2 and sent[0] == sent[1], sent
    assert "Added 1 × Espresso cup to your cart." in shopper.flashes()  # the first answer
    assert "idempotency_key=" in sent[0]
    assert shopper.cart() == {CUP: 1}, "the resubmitted form added twice"



def test_back_then_submitting_the_same_form_again_adds_once(shopper: Shopper) -> None:
    """Back shows the catalog as it was (the shop sends no-cache, not no-store),
    so its form carries the same idempotency key: the repeat adds nothing."""
    shopper.open("/")  # a first visit sets the session cookie (pages vary by cookie)
    shopper.open("/")
    key = shopper.add_form(CUP).locator("input[name=idempotency_key]").input_value()
    shopper.add(CUP)
    shopper.page.go_back()
    assert shopper.add_form(CUP).locator("input[name=idempotency_key]").input_value() == key
    shopper.add(CUP)
    shopper.shot("back-and-resubmitted")
    assert shopper.cart() == {CUP: 1}, "back, then submitting the same form, added twice"


def test_a_form_without_its_csrf_token_is_refused_with_a_friendly_page(shopper: Shopper) -> None:
    shopper.open("/")
    shopper.page.evaluate(
        f"""() => document.querySelector('#product-{CUP} input[name=csrf_token]').remove()"""
    )
    response = shopper.submit(shopper.add_form(CUP).get_by_role("button"))
    shopper.shot("refused")
    assert response.status == 400
    page_text = shopper.page.locator("body").inner_text()
    assert "Traceback" not in page_text, page_text
    assert shopper.page.locator("h1").inner_text().strip()
    assert shopper.page.locator(".error-message").inner_text().strip()
    assert shopper.page.get_by_role("link", name="Back to the catalog").is_visible()
    assert shopper.served_by()
    assert accessibility_problems(shopper.page) == []
    assert shopper.cart() == {}, "a refused form changed the cart"


def test_the_shop_works_with_javascript_disabled(shopper_factory) -> None:
    shopper = shopper_factory(javascript=False)
    username = new_username()
    shopper.open("/")
    shopper.add(BEANS, 2)
    shopper.add(CUP)
    shopper.shot("added-without-javascript")
    shopper.register(username, PASSWORD)
    assert shopper.cart() == {BEANS: 2, CUP: 1}
    shopper.set_qty(BEANS, 1)
    shopper.shot("cart-without-javascript")
    order_id = shopper.check_out()
    assert shopper.orders()[order_id] == {"House blend, 250 g": 1, "Espresso cup": 1}
    shopper.shot("ordered-without-javascript")


def test_the_main_pages_are_accessible(shopper: Shopper) -> None:
    problems = []

    def check(step: str) -> None:
        shopper.shot(step)
        problems.extend(accessibility_problems(shopper.page))

    shopper.open("/register")
    check("register")
    shopper.open("/login")
    check("login")
    shopper.register(new_username(), PASSWORD)
    check("catalog")
    shopper.add(CUP)
    shopper.cart()
    check("cart")
    shopper.check_out()
    check("orders")
    assert problems == []


def test_the_cluster_page_shows_a_killed_replica_go_and_come_back_without_a_reload(
    shopper: Shopper, cluster: Launcher
) -> None:
    """The live cluster page redraws itself from /api/cluster: a replica killed
    while the page is open turns "gone", and "alive" again after `start`."""
    page = shopper.page
    shopper.open("/cluster")
    state = "#cluster-rows tr[data-name='{name}'] td.state"
    for name in ("shop-1", "shop-2", "shop-3"):
        assert page.locator(state.format(name=name)).inner_text() == "alive"
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    shopper.shot("cluster-all-alive")

    cluster.run("kill", "shop-3")
    try:
        page.wait_for_function(
            "sel => document.querySelector(sel)?.textContent === 'gone'",
            arg=state.format(name="shop-3"),
            timeout=15_000,
        )
        shopper.shot("cluster-shop-3-gone")
        keep_for_readme(shopper.shots.saved[-1], "screenshot-cluster-page.png")
    finally:
        cluster.run("start", "shop-3", check=False)
    page.wait_for_function(
        "sel => document.querySelector(sel)?.textContent === 'alive'",
        arg=state.format(name="shop-3"),
        timeout=15_000,
    )
    shopper.shot("cluster-shop-3-back")
    assert navigations == [], "the page reloaded instead of redrawing itself"
