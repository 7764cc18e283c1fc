"""Fixtures of the browser tests: one Chromium for the session, fresh contexts
and pages, step screenshots.

Never downloads a browser: Chromium is Debian's (`apt-get install chromium`),
launched with `executable_path`; a machine without it skips these tests and
says how to install it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from .screenshots import Shots, slug

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


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """One headless Chromium for the whole test session, closed at its end."""
    sync_api = pytest.importorskip("playwright.sync_api")
    path = _chromium_path()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=path, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_context(browser) -> Iterator[Callable[..., object]]:
    """`new_context(**options)`: a fresh context (own cookies) with the suite's
    viewport and deadlines; every one is closed when the test ends, even on failure."""
    contexts = []

    def make(**options):
        context = browser.new_context(viewport=VIEWPORT, **options)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        return context

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def page(new_context):
    """A page in a fresh browser context."""
    return new_context().new_page()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    """`shots(page, "step")` saves test-output/browser/<test>/NN-step.png."""
    folder = request.config.rootpath / "test-output" / "browser" / slug(request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots of {request.node.name}: {folder}")
    return Shots(folder)
