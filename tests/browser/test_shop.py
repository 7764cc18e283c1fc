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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster_support import Launcher, running_cluster

from .a11y import accessibility_problems
from .shop_page import ShopPage

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
def shop_page_factory(new_context, cluster: Launcher, shots) -> Callable[..., ShopPage]:
    """`shop_page_factory(javascript=True)` gives a ShopPage in a fresh browser
    context (own cookies), closed when the test ends."""

    def make(*, javascript: bool = True) -> ShopPage:
        page = new_context(java_script_enabled=javascript).new_page()
        return ShopPage(page, cluster.url, shots)

    return make


@pytest.fixture
def shop_page(shop_page_factory) -> ShopPage:
    return shop_page_factory()


def new_username() -> str:
    return f"bt-{uuid.uuid4().hex[:12]}"


def alive_replicas(cluster: Launcher) -> set[str]:
    return {r["name"] for r in cluster.status()["replicas"] if r["alive"]}


def keep_for_readme(shot: Path, name: str) -> None:
    if os.environ.get("SHOP_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, DOCS / name)
        print(f"updated {DOCS / name}")


def test_a_replica_killed_mid_purchase_loses_neither_the_cart_nor_the_login(
    shop_page: ShopPage, cluster: Launcher
) -> None:
    username = new_username()
    shop_page.open("/")
    shop_page.shot("catalog")
    keep_for_readme(shop_page.shots.saved[-1], "screenshot-catalog.png")

    shop_page.register(username, PASSWORD)
    shop_page.shot("registered")
    shop_page.log_out()
    shop_page.log_in(username, PASSWORD)
    shop_page.shot("logged-in")

    for product_id in (CUP, FILTERS, BEANS):
        shop_page.add(product_id)
    shop_page.shot("added-three")
    assert shop_page.cart() == {CUP: 1, FILTERS: 1, BEANS: 1}
    shop_page.set_qty(FILTERS, 3)
    before = shop_page.cart_on_page()
    total = shop_page.page.locator("#cart-total").inner_text()
    assert before == {CUP: 1, FILTERS: 3, BEANS: 1}
    victim = shop_page.served_by()
    shop_page.shot(f"cart-served-by-{victim}")

    cluster.run("kill", victim)
    try:
        assert victim not in alive_replicas(cluster), f"{victim} still runs after kill"

        shop_page.page.reload()
        shop_page.shot(f"cart-after-killing-{victim}")
        keep_for_readme(shop_page.shots.saved[-1], "screenshot-cart-after-kill.png")
        assert shop_page.cart_on_page() == before, "the cart changed when a replica died"
        assert shop_page.page.locator("#cart-total").inner_text() == total
        assert shop_page.signed_in_as() == username, "the login was lost when a replica died"
        assert shop_page.served_by() != victim

        order_id = shop_page.check_out()
        shop_page.shot("order-placed")
        assert shop_page.orders() == {
            order_id: {"Espresso cup": 1, "Paper filters (100)": 3, "House blend, 250 g": 1}
        }
        assert shop_page.signed_in_as() == username
        shop_page.shot("order-history")
        shop_page.log_out()
        shop_page.open("/orders")
        assert "/login" in shop_page.page.url, "the order history is shown after logging out"
        shop_page.shot("logged-out")
    finally:  # back in rotation for the next tests; never hide this test's own failure
        cluster.run("start", victim, check=False)


def test_the_anonymous_cart_merges_into_the_users_cart_at_login(shop_page: ShopPage) -> None:
    username = new_username()
    shop_page.register(username, PASSWORD)
    shop_page.add(MUG)
    shop_page.log_out()
    assert shop_page.cart() == {}, "the user's cart shows after logging out"

    shop_page.add(MUG, 2)
    shop_page.add(BEANS)
    assert shop_page.cart() == {MUG: 2, BEANS: 1}
    shop_page.shot("anonymous-cart")
    shop_page.log_in(username, PASSWORD)
    assert shop_page.cart() == {MUG: 3, BEANS: 1}
    shop_page.shot("merged-cart")


def test_a_form_the_browser_sends_twice_adds_once(shop_page: ShopPage) -> None:
    """The response to an add is lost on its way back (the shop did the add);
    the shopper reloads, and Chromium posts the very same form again, same
    idempotency key: the shop answers as the first time and adds nothing."""
    shop_page.open("/")
    sent = []
    shop_page.page.on(
        "request", lambda r: sent.append(r.post_data) if r.url.endswith("/cart/add") else None
    )

    def lose_the_response(route) -> None:
        answered = route.fetch(max_redirects=0)  # the shop receives and applies it
        assert answered.status == 303
        route.fulfill(status=502, content_type="text/plain", body="502 Bad Gateway")

    shop_page.page.route("**/cart/add", lose_the_response, times=1)
    response = shop_page.submit(shop_page.add_form(CUP).get_by_role("button"))
    assert response.status == 502
    shop_page.shot("response-lost")

    shop_page.page.reload()  # Chromium resubmits the POST as it was
    shop_page.shot("resubmitted")
    assert len(sent) == 2 and sent[0] == sent[1], sent
    assert "Added 1 × Espresso cup to your cart." in shop_page.flashes()  # the first answer
    assert "idempotency_key=" in sent[0]
    assert shop_page.cart() == {CUP: 1}, "the resubmitted form added twice"


def test_back_then_submitting_the_same_form_again_adds_once(shop_page: ShopPage) -> None:
    """Back shows the catalog as it was (the shop sends no-cache, not no-store),
    so its form carries the same idempotency key: the repeat adds nothing."""
    # Pages vary by cookie, and a visitor's first write starts its session (a
    # visitor who only looks has none): that first add changes the cookies, so
    # Back after it fetches a fresh page. From the session on, cookies stay put.
    shop_page.open("/")
    shop_page.add(BEANS)
    shop_page.open("/")
    key = shop_page.add_form(CUP).locator("input[name=idempotency_key]").input_value()
    shop_page.add(CUP)
    shop_page.page.go_back()
    assert shop_page.add_form(CUP).locator("input[name=idempotency_key]").input_value() == key
    shop_page.add(CUP)
    shop_page.shot("back-and-resubmitted")
    assert shop_page.cart() == {BEANS: 1, CUP: 1}, "back, then the same form again, added twice"


def test_a_form_without_its_csrf_token_is_refused_with_a_friendly_page(shop_page: ShopPage) -> None:
    shop_page.open("/")
    shop_page.page.evaluate(
        f"""() => document.querySelector('#product-{CUP} input[name=csrf_token]').remove()"""
    )
    response = shop_page.submit(shop_page.add_form(CUP).get_by_role("button"))
    shop_page.shot("refused")
    assert response.status == 400
    page_text = shop_page.page.locator("body").inner_text()
    assert "Traceback" not in page_text, page_text
    assert shop_page.page.locator("h1").inner_text().strip()
    assert shop_page.page.locator(".error-message").inner_text().strip()
    assert shop_page.page.get_by_role("link", name="Back to the catalog").is_visible()
    assert shop_page.served_by()
    assert accessibility_problems(shop_page.page) == []
    assert shop_page.cart() == {}, "a refused form changed the cart"


def test_the_shop_works_with_javascript_disabled(shop_page_factory) -> None:
    shop_page = shop_page_factory(javascript=False)
    username = new_username()
    shop_page.open("/")
    shop_page.add(BEANS, 2)
    shop_page.add(CUP)
    shop_page.shot("added-without-javascript")
    shop_page.register(username, PASSWORD)
    assert shop_page.cart() == {BEANS: 2, CUP: 1}
    shop_page.set_qty(BEANS, 1)
    shop_page.shot("cart-without-javascript")
    order_id = shop_page.check_out()
    assert shop_page.orders()[order_id] == {"House blend, 250 g": 1, "Espresso cup": 1}
    shop_page.shot("ordered-without-javascript")


def test_the_main_pages_are_accessible(shop_page: ShopPage) -> None:
    problems = []

    def check(step: str) -> None:
        shop_page.shot(step)
        problems.extend(accessibility_problems(shop_page.page))

    shop_page.open("/register")
    check("register")
    shop_page.open("/login")
    check("login")
    shop_page.register(new_username(), PASSWORD)
    check("catalog")
    shop_page.add(CUP)
    shop_page.cart()
    check("cart")
    shop_page.check_out()
    check("orders")
    assert problems == []


def test_the_cluster_page_shows_a_killed_replica_go_and_come_back_without_a_reload(
    shop_page: ShopPage, cluster: Launcher
) -> None:
    """The live cluster page redraws itself from /api/cluster: a replica killed
    while the page is open turns "gone", and "alive" again after `start`."""
    page = shop_page.page
    shop_page.open("/cluster")
    for name in ("shop-1", "shop-2", "shop-3"):
        assert shop_page.replica_state(name) == "alive"
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    shop_page.shot("cluster-all-alive")

    cluster.run("kill", "shop-3")
    try:
        shop_page.wait_for_replica_state("shop-3", "gone")
        shop_page.shot("cluster-shop-3-gone")
        keep_for_readme(shop_page.shots.saved[-1], "screenshot-cluster-page.png")
    finally:
        cluster.run("start", "shop-3", check=False)
    shop_page.wait_for_replica_state("shop-3", "alive")
    shop_page.shot("cluster-shop-3-back")
    assert navigations == [], "the page reloaded instead of redrawing itself"


def test_the_cluster_page_shows_autoscaling_turned_on_and_off_without_a_reload(
    shop_page: ShopPage, cluster: Launcher
) -> None:
    """The page's autoscaling section redraws itself from /api/cluster: turned on,
    it shows the range and the autoscaler's first decision; turned off, the
    decision "off" on top of the list. A range of 3 to 4 leaves the idle cluster
    as it is (3 replicas) for the other tests."""
    page = shop_page.page
    shop_page.open("/cluster")
    assert shop_page.autoscaling()[0].startswith("Off.")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    cluster.run("autoscale", "3:4")
    try:
        shop_page.wait_for_autoscaling(on=True, latest="on")
        summary, latest = shop_page.autoscaling()
        assert summary.startswith("On: 3 replicas (range 3 to 4, target 4 requests in flight")
        assert latest == "on"
        shop_page.shot("cluster-autoscaling-on")
        assert accessibility_problems(page) == []
    finally:
        cluster.run("autoscale", "off", check=False)
    shop_page.wait_for_autoscaling(on=False, latest="off")
    shop_page.shot("cluster-autoscaling-off")
    assert navigations == [], "the page reloaded instead of redrawing itself"
