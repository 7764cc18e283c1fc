"""The rooms of the code and what each may import (docs/architecture.md, "Rooms").

Read from the source with `ast`, imports inside functions included, so a rule
broken anywhere fails here rather than in a reviewer's head.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.static

REPO = Path(__file__).resolve().parent.parent

# Plain Python on Redis: no Flask request machinery, no metrics, no web module.
DOMAIN = {
    "shop.accounts",
    "shop.atomic",
    "shop.cart",
    "shop.cartstore",
    "shop.catalog",
    "shop.errors",
    "shop.formatting",
    "shop.heartbeat",
    "shop.idempotency",
    "shop.keys",
    "shop.orders",
    "shop.scalelog",
    "shop.replication",
    "shop.shopstore",
    "shop.throttle",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    """Every module of `package` (not its subpackages) by dotted name."""
    return {module_name(p): p for p in (REPO / package.replace(".", "/")).glob("*.py")}


def imports(path: Path) -> set[str]:
    """The dotted names `path` imports; for `from x import y`, both x and x.y."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            here = package.split(".")
            base = here[: len(here) - node.level + 1] if node.level else []
            origin = ".".join(base + ([node.module] if node.module else []))
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


def test_sessionstore_knows_nothing_of_the_shop():
    for name, path in modules("sessionstore").items():
        assert not {i for i in imports(path) if i.split(".")[0] == "shop"}, name


def test_domain_modules_import_no_flask_no_metrics_and_no_web_module():
    shop_modules = set(modules("shop"))
    for name in DOMAIN:
        used = imports(modules("shop")[name])
        assert not {i for i in used if i.split(".")[0] in ("flask", "prometheus_client")}, name
        assert (used & shop_modules) - DOMAIN - {"shop"} == set(), name


def test_the_app_never_imports_the_launcher():
    for name, path in modules("shop").items():
        assert not {i for i in imports(path) if i.split(".")[:2] == ["shop", "cluster"]}, name


def test_the_launcher_uses_only_domain_modules_of_the_shop():
    """It runs the app only through gunicorn: never create_app, a view or a hook."""
    app_modules = set(modules("shop"))
    for name, path in modules("shop.cluster").items():
        assert (imports(path) & app_modules) - DOMAIN - {"shop"} == set(), name
