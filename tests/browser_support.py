"""Helpers for the browser tests: Debian's Chromium through playwright, step
screenshots, and accessibility checks evaluated inside the page.

Never downloads a browser: Chromium is Debian's (`apt-get install chromium`),
launched with `executable_path`. The fixtures are imported by the browser test
modules (their names are given with `name=` so importing them trips no linter).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SHOP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
# Every playwright wait has a deadline: a hung server fails the step, not the run.
ACTION_TIMEOUT_MS = 15_000
VIEWPORT = {"width": 1100, "height": 800}


def _chromium_path() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        pytest.skip(f"Chromium not found at {CHROMIUM}: sudo apt-get install chromium")
    return path


_BROWSER = pytest.StashKey[object]()


@pytest.fixture(scope="session", name="browser")
def browser_fixture(request: pytest.FixtureRequest):
    """One headless Chromium for the whole test session.

    Each test module imports this fixture, and playwright's sync API allows one
    running instance per thread, so the browser is kept in the pytest config
    and closed when the session ends."""
    if _BROWSER in request.config.stash:
        return request.config.stash[_BROWSER]
    sync_api = pytest.importorskip("playwright.sync_api")
    path = _chromium_path()
    playwright = sync_api.sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=path, args=CHROMIUM_ARGS, headless=True
        )
    except BaseException:
        playwright.stop()
        raise

    def close() -> None:
        try:
            browser.close()
        finally:
            playwright.stop()

    request.config.add_cleanup(close)
    request.config.stash[_BROWSER] = browser
    return browser


def new_context(browser, **options):
    """A fresh context (own cookies) with the suite's viewport and deadlines."""
    context = browser.new_context(viewport=VIEWPORT, **options)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
    return context


@pytest.fixture(name="page")
def page_fixture(browser) -> Iterator:
    """A page in a fresh browser context, closed even when the test fails."""
    context = new_context(browser)
    try:
        yield context.new_page()
    finally:
        context.close()


# --- step screenshots --------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "step"


@dataclass
class Shots:
    """Saves `NN-step.png` for each step of one test under its output folder."""

    folder: Path
    count: int = 0
    saved: list[Path] = field(default_factory=list)

    def __call__(self, page, step: str, *, full_page: bool = True) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{_slug(step)}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.saved.append(path)
        print(f"screenshot: {path}")
        return path


@pytest.fixture(name="shots")
def shots_fixture(request: pytest.FixtureRequest) -> Shots:
    """`shots(page, "step")` saves test-output/browser/<test>/NN-step.png."""
    folder = request.config.rootpath / "test-output" / "browser" / _slug(request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots of {request.node.name}: {folder}")
    return Shots(folder)


# --- accessibility checks ------------------------------------------------------
# Each returns a list of human-readable problems (empty = pass), so a failing
# assertion names the offending elements.

_DESCRIBE_JS = """
el => {
  const tag = el.tagName.toLowerCase();
  const id = el.id ? '#' + el.id : '';
  const name = el.getAttribute('name') ? `[name=${el.getAttribute('name')}]` : '';
  const text = (el.innerText || el.value || '').trim().replace(/\\s+/g, ' ').slice(0, 40);
  return `<${tag}${id}${name}>` + (text ? ` "${text}"` : '');
}
"""

_UNLABELLED_JS = f"""
() => {{
  const describe = {_DESCRIBE_JS};
  const skip = new Set(['hidden', 'submit', 'button', 'reset', 'image']);
  const problems = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {{
    if (el.tagName === 'INPUT' && skip.has((el.getAttribute('type') || 'text').toLowerCase()))
      continue;
    const byFor = el.id && [...document.querySelectorAll('label[for]')]
      .some(l => l.htmlFor === el.id && l.textContent.trim());
    const wrapped = el.closest('label') && el.closest('label').textContent.trim();
    const aria = (el.getAttribute('aria-label') || '').trim();
    const labelledBy = (el.getAttribute('aria-labelledby') || '').split(/\\s+/)
      .some(id => id && document.getElementById(id)
                  && document.getElementById(id).textContent.trim());
    if (!(byFor || wrapped || aria || labelledBy)) problems.push(describe(el) + ' has no label');
  }}
  return problems;
}}
"""

_HEADINGS_JS = """
() => {
  const heads = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')];
  const problems = [];
  const h1s = heads.filter(h => h.tagName === 'H1').length;
  if (h1s !== 1) problems.push(`expected exactly one <h1>, found ${h1s}`);
  let previous = 0;
  for (const h of heads) {
    const level = Number(h.tagName[1]);
    if (level > previous + 1) {
      const text = h.textContent.trim().slice(0, 40);
      problems.push(`<h${level}> "${text}" follows <h${previous || 'none'}> (skipped level)`);
    }
    previous = level;
  }
  return problems;
}
"""

_CONTRAST_JS = f"""
minimum => {{
  const describe = {_DESCRIBE_JS};
  const parse = c => {{
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return {{r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}};
  }};
  const over = (top, bottom) => ({{
    r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a), a: 1,
  }});
  // The background behind `el`: its own and its ancestors' colours, blended
  // from the first opaque one down, over white (the canvas).
  const background = el => {{
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {{
      const style = getComputedStyle(node);
      if (style.backgroundImage !== 'none') return null;  // image/gradient: unknown
      const c = parse(style.backgroundColor);
      if (c && c.a > 0) {{ layers.push(c); if (c.a >= 1) break; }}
    }}
    let colour = {{r: 255, g: 255, b: 255, a: 1}};
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  }};
  const luminance = c => {{
    const lin = v => {{
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    }};
    return 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
  }};
  const problems = [];
  for (const el of document.body.querySelectorAll('*')) {{
    const hasText = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!hasText) continue;
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (style.visibility !== 'visible' || style.display === 'none' || box.width === 0
        || box.height === 0 || Number(style.opacity) === 0) continue;
    const bg = background(el);
    const fg = parse(style.color);
    if (!bg || !fg) continue;
    const text = over(fg, bg);
    const [hi, lo] = [luminance(text), luminance(bg)].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    if (ratio < minimum)
      problems.push(`${{describe(el)}} contrast ${{ratio.toFixed(2)}}:1 < ${{minimum}}:1 `
                    + `(${{style.color}} on rgb(${{bg.r|0}}, ${{bg.g|0}}, ${{bg.b|0}}))`);
  }}
  return problems;
}}
"""

_FOCUSABLE = (
    "a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), "
    "select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex='-1'])"
)

# The computed properties a focus indicator can show through; an outline only
# counts when it is actually drawn (style not none, width above zero).
_FOCUS_LOOK_JS = """
el => {
  const s = getComputedStyle(el);
  const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0
    ? `${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor}` : 'none';
  // Position and clipping too: a skip link shows itself by moving on screen.
  return JSON.stringify([outline, s.boxShadow, s.borderColor, s.backgroundColor, s.color,
                         s.textDecorationLine, s.top, s.left, s.transform, s.clipPath, s.clip]);
}
"""


def unlabelled_inputs(page) -> list[str]:
    """Inputs, selects and textareas (not hidden/buttons) with no label[for],
    wrapping label, aria-label or aria-labelledby."""
    return page.evaluate(_UNLABELLED_JS)


def heading_problems(page) -> list[str]:
    """Not exactly one h1, or a heading that skips a level (h2 then h4)."""
    return page.evaluate(_HEADINGS_JS)


def contrast_problems(page, minimum: float = 4.5) -> list[str]:
    """Visible text whose WCAG contrast against its effective background is too low."""
    return page.evaluate(_CONTRAST_JS, minimum)


def focus_problems(page, *, max_tabs: int = 40) -> list[str]:
    """Tab through the page's controls with the keyboard; each one that gets
    focus must look different from its unfocused self (outline, shadow, colours)."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    looks = page.evaluate(
        f"""selector => [...document.querySelectorAll(selector)].map((el, i) => {{
              el.setAttribute('data-a11y-index', i);
              return ({_FOCUS_LOOK_JS})(el);
            }})""",
        _FOCUSABLE,
    )
    if not looks:
        return []
    problems, seen = [], set()
    for _ in range(min(len(looks), max_tabs)):
        page.keyboard.press("Tab")
        page.wait_for_timeout(30)  # let a short focus transition settle
        focused = page.evaluate(
            f"""() => {{
              const el = document.activeElement;
              if (!el || !el.hasAttribute('data-a11y-index')) return null;
              return [Number(el.getAttribute('data-a11y-index')), ({_FOCUS_LOOK_JS})(el),
                      ({_DESCRIBE_JS})(el)];
            }}"""
        )
        if focused is None:
            continue
        index, look, description = focused
        if index in seen:
            break  # wrapped around
        seen.add(index)
        if look == looks[index]:
            problems.append(f"{description} looks the same focused and unfocused")
    if not seen:
        problems.append("Tab moved focus to none of the page's controls")
    return problems


def accessibility_problems(page) -> list[str]:
    """All four checks on the current page, each problem prefixed by its page."""
    url = page.url
    checks = {
        "label": unlabelled_inputs,
        "headings": heading_problems,
        "contrast": contrast_problems,
        "focus": focus_problems,
    }
    return [
        f"{url} [{name}] {problem}" for name, check in checks.items() for problem in check(page)
    ]


# --- a shopper driving the shop's HTML pages -----------------------------------


@dataclass
class Shopper:
    """One person in one browser context, using the shop only through its pages:
    links, forms and buttons, as they would (works with JavaScript off too)."""

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

    # What the shopper does.
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
