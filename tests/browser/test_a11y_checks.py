"""Self-tests of the accessibility checks in a11y.py: each one passes a good
page and catches a bad one, so a green shop test means something."""

from __future__ import annotations

import pytest

from .a11y import (
    accessibility_problems,
    contrast_problems,
    focus_problems,
    heading_problems,
    unlabelled_inputs,
)

pytestmark = pytest.mark.browser

GOOD = """<!doctype html><html lang="en"><head><title>good</title>
<style>
  body { color: #222; background: #fff; }
  .card { background: #1a3d6d; color: #fff; padding: 4px; }
  .card span { background: rgba(255, 255, 255, 0.1); }
  a:focus-visible, button:focus-visible, input:focus-visible { outline: 3px solid #1a5fb4; }
  .skip { position: absolute; left: -999px; }
  .skip:focus { left: 0; outline: none; }  /* shown by moving on screen */
</style></head><body>
<a class="skip" href="#main">Skip to content</a>
<h1>Shop</h1>
<h2>Catalog</h2><h3>Tea</h3><h2>Cart</h2>
<p class="card">On a dark card <span>and a translucent layer</span></p>
<form>
  <label for="user">Username</label><input id="user" name="user">
  <label>Password <input type="password" name="password"></label>
  <input aria-label="Quantity" type="number" name="qty">
  <select aria-labelledby="size-label" name="size"><option>S</option></select>
  <span id="size-label">Size</span>
  <input type="hidden" name="csrf_token" value="x">
  <button type="submit">Log in</button>
</form>
<a href="#top">Back to top</a>
</body></html>"""

BAD = """<!doctype html><html lang="en"><head><title>bad</title>
<style>
  body { color: #222; background: #fff; }
  .faint { color: #aaa; }
  .dark { background: #333; } .dark p { color: #555; }
  *:focus { outline: none; }
</style></head><body>
<h1>Shop</h1><h3>Skipped a level</h3><h1>Second h1</h1>
<p class="faint">Light grey on white</p>
<div class="dark"><p>Dark grey on dark grey</p></div>
<form>
  <input id="nolabel" name="user">
  <label for="elsewhere">Label for another element</label><input name="qty">
  <button type="submit">Go</button>
</form>
</body></html>"""


def test_good_page_passes_every_check(page) -> None:
    page.set_content(GOOD)
    assert accessibility_problems(page) == []


def test_unlabelled_inputs_are_named(page) -> None:
    page.set_content(BAD)
    problems = unlabelled_inputs(page)
    assert len(problems) == 2, problems
    assert any("#nolabel" in p for p in problems)
    assert any("[name=qty]" in p for p in problems)


def test_heading_order_and_single_h1(page) -> None:
    page.set_content(BAD)
    problems = heading_problems(page)
    assert any("exactly one <h1>, found 2" in p for p in problems), problems
    assert any("<h3>" in p and "skipped" in p for p in problems), problems


def test_low_contrast_text_is_caught(page) -> None:
    page.set_content(BAD)
    problems = contrast_problems(page)
    assert any("Light grey on white" in p for p in problems), problems
    assert any("Dark grey on dark grey" in p for p in problems), problems
    assert not any("Shop" in p for p in problems), problems


def test_invisible_focus_is_caught(page) -> None:
    page.set_content(BAD)
    problems = focus_problems(page)
    # Both inputs and the button were reached and none shows focus.
    assert len(problems) == 3, problems
