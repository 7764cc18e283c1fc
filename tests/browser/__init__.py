"""Browser tests: the shop in Debian's Chromium, driven by playwright.

conftest.py starts the browser and hands out pages, contexts and step
screenshots; shop_page.py is the page object a test drives the shop with;
a11y.py holds the accessibility checks (test_a11y_checks.py tests them).
"""
