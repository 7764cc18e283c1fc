"""The page object of the shop: one person in one browser context, using the
shop only through its pages (links, forms, buttons), as a person would."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .screenshots import Shots

REPLICA_STATE = "#cluster-rows tr[data-name='{name}'] td.state"  # on /cluster
AUTOSCALE_SUMMARY = "#autoscale-summary"  # on /cluster, data-on="yes" or "no"
LATEST_DECISION = "#autoscale-rows tr:first-child"  # on /cluster, newest first


@dataclass
class ShopPage:
    """The shop as one person sees it in one browser context (works with
    JavaScript off too): what the pages say, and what the person does."""

    page: object
    base_url: str
    shots: Shots | None = None

    def shot(self, step: str) -> None:
        if self.shots is not None:
            self.shots(self.page, step)

    def open(self, path: str = "/") -> object:
        """Load a page; returns playwright's response (status, headers)."""
        response = self.page.goto(self.base_url.rstrip("/") + path)
        assert response is not None, f"no response for {path}"
        return response

    def submit(self, button) -> object:
        """Click a form's submit button and wait for the page it leads to (after
        any redirect) to load; returns that page's response."""
        with self.page.expect_navigation(wait_until="load") as navigation:
            button.click()
        return navigation.value

    # What the page says.
    def served_by(self) -> str:
        return self.page.locator("#served-by").inner_text().strip()

    def signed_in_as(self) -> str | None:
        who = self.page.locator("#signed-in-as")
        return who.inner_text().strip() if who.count() else None

    def flashes(self) -> list[str]:
        return [text.strip() for text in self.page.locator(".flash").all_inner_texts()]

    def replica_state(self, name: str) -> str:
        """On the cluster page: 'alive' or 'gone' for replica `name`."""
        return self.page.locator(REPLICA_STATE.format(name=name)).inner_text()

    def wait_for_replica_state(self, name: str, state: str) -> None:
        """Until the cluster page, redrawing itself, shows replica `name` as `state`
        (within the action deadline: the page redraws every 2 s)."""
        self.page.wait_for_function(
            "([selector, state]) => document.querySelector(selector)?.textContent === state",
            arg=[REPLICA_STATE.format(name=name), state],
        )

    def autoscaling(self) -> tuple[str, str]:
        """On the cluster page: the autoscaling summary, and the latest decision's headline."""
        summary = self.page.locator(AUTOSCALE_SUMMARY).inner_text().strip()
        latest = self.page.locator(f"{LATEST_DECISION} th")  # none: "No decision yet."
        return summary, latest.inner_text().strip() if latest.count() else ""

    def wait_for_autoscaling(self, on: bool, latest: str) -> None:
        """Until the cluster page, redrawing itself, shows autoscaling on or off with
        `latest` (an action: on, off, up, down) as its newest decision."""
        self.page.wait_for_function(
            """([summary, row, on, latest]) =>
                 document.querySelector(summary)?.dataset.on === on &&
                 document.querySelector(row)?.dataset.action === latest""",
            arg=[AUTOSCALE_SUMMARY, LATEST_DECISION, "yes" if on else "no", latest],
        )

    def cart(self) -> dict[str, int]:
        """Opens the cart page and reads it: {product_id: qty}."""
        self.open("/cart")
        return self.cart_on_page()

    def cart_on_page(self) -> dict[str, int]:
        lines = {}
        for row in self.page.locator("tr[id^='line-']").all():
            product_id = row.get_attribute("id").removeprefix("line-")
            lines[product_id] = int(row.locator("input[name=qty]").input_value())
        return lines

    # What the person does.
    def _account_form(self, path: str, button: str, username: str, password: str) -> object:
        self.open(path)
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        return self.submit(self.page.get_by_role("button", name=button))

    def register(self, username: str, password: str) -> None:
        self._account_form("/register", "Create account", username, password)
        assert self.signed_in_as() == username, self.flashes()

    def log_in(self, username: str, password: str) -> None:
        self._account_form("/login", "Log in", username, password)
        assert self.signed_in_as() == username, self.flashes()

    def log_out(self) -> None:
        self.submit(self.page.get_by_role("button", name="Log out"))
        assert self.signed_in_as() is None, "still signed in after logging out"

    def add_form(self, product_id: str):
        return self.page.locator(f"#product-{product_id} form")

    def add(self, product_id: str, qty: int = 1) -> None:
        """Add from the catalog page (opened if not already there)."""
        if self.page.locator(f"#product-{product_id}").count() == 0:
            self.open("/")
        form = self.add_form(product_id)
        form.locator("input[name=qty]").fill(str(qty))
        self.submit(form.get_by_role("button", name="Add to cart"))
        assert any(text.startswith(f"Added {qty} ×") for text in self.flashes()), self.flashes()

    def set_qty(self, product_id: str, qty: int) -> None:
        """Change a quantity on the cart page (opened if not already there)."""
        row = self.page.locator(f"#line-{product_id}")
        if row.count() == 0:
            self.open("/cart")
        row.locator("input[name=qty]").fill(str(qty))
        self.submit(row.get_by_role("button", name="Update"))
        assert f"Quantity set to {qty}." in self.flashes(), self.flashes()

    def check_out(self) -> str:
        """Place the order from the cart page; returns the order id the shop announces."""
        self.open("/cart")
        self.submit(self.page.get_by_role("button", name=re.compile(r"^Place order")))
        placed = [m for m in self.flashes() if m.startswith("Thank you! Order #")]
        assert placed, self.flashes()
        return placed[0].removeprefix("Thank you! Order #").split(" ", 1)[0]

    def orders(self) -> dict[str, dict[str, int]]:
        """The order history page: {order_id: {product name: qty}}."""
        self.open("/orders")
        found = {}
        for section in self.page.locator("section.order").all():
            order_id = section.get_attribute("id").removeprefix("order-")
            found[order_id] = {
                row.locator("th").inner_text().strip(): int(row.locator("td").first.inner_text())
                for row in section.locator("tbody tr").all()
            }
        return found
