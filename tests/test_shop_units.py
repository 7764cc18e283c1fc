"""Pure functions of the shop: formatting, validation rules, configuration."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shop import accounts, cart, config, keys
from shop.errors import ShopError
from shop.formatting import money
from shop.web import describe_age


@pytest.mark.parametrize(
    ("cents", "text"),
    [(0, "€0.00"), (5, "€0.05"), (1250, "€12.50"), (123456789, "€1,234,567.89"), (-150, "-€1.50")],
)
def test_money_formats_integer_cents_as_euros(cents, text):
    assert money(cents) == text


def test_session_age_reads_naturally():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert describe_age(None, now) == "new"
    assert describe_age(now - timedelta(seconds=42), now) == "42 s"
    assert describe_age(now - timedelta(minutes=5, seconds=3), now) == "5 min 3 s"
    assert describe_age(now - timedelta(hours=2, minutes=7), now) == "2 h 7 min"


@pytest.mark.parametrize("name", ["bob", "o'hara", "<b>x</b>", "two words", "a" * 32, "~!@#"])
def test_acceptable_usernames(name):
    assert accounts.normalize_username(name) == name
    assert re.search(accounts.USERNAME_PATTERN, name)  # what /api/openapi.json says


@pytest.mark.parametrize(
    "name",
    [
        "ab", "a" * 33, " lead", "trail ", "two  spaces", "tab\tname", "nul\x00l", "new\n",
        "Élodie", "\u0430dmin",  # non-ASCII: "а" is Cyrillic, a look-alike of "a"
        "bob\n", 42, None,
    ],
)
def test_refused_usernames(name):
    with pytest.raises(ShopError) as caught:
        accounts.normalize_username(name)
    assert caught.value.status == 400


@pytest.mark.parametrize("value", [1, 50, 99])
def test_json_qty_in_range_is_accepted(value):
    assert cart.parse_qty(value) == value
    assert cart.parse_qty(float(value)) == value  # 2.0 is the number 2 in JSON


@pytest.mark.parametrize("value", [0, -1, 100, 10**9, "3", "abc", True, 1.5, 0.0, None, [1]])
def test_json_qty_out_of_range_or_of_wrong_type_is_refused(value):
    with pytest.raises(ShopError):
        cart.parse_qty(value)


@pytest.mark.parametrize("text", ["", " ", "abc", "1e2", "+1", "-1", "1.0", "٣", "0100", "100"])
def test_form_qty_must_be_plain_ascii_digits_in_range(text):
    with pytest.raises(ShopError):
        cart.parse_form_qty(text)


def test_production_refuses_to_start_without_a_secret_key():
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        config.load_config({"SHOP_ENV": "production"})
    settings = config.load_config({"SHOP_ENV": "production", "SECRET_KEY": "s3cret"})
    assert settings["SESSION_COOKIE_SECURE"] is True


def test_development_falls_back_to_a_fixed_dev_key_with_a_warning(caplog):
    settings = config.load_config({})
    assert settings["SECRET_KEY"] == config.DEV_SECRET_KEY
    assert "SECRET_KEY is not set" in caplog.text
    assert settings["REDIS_URL"] == "redis://127.0.0.1:6379/0"


def test_environment_settings_are_read_and_overrides_win():
    env = {"REPLICA_NAME": "r9", "SESSION_IDLE_TIMEOUT": "60", "SECRET_KEY": "k"}
    settings = config.load_config(env, overrides={"SESSION_IDLE_TIMEOUT": 5})
    assert settings["REPLICA_NAME"] == "r9" and settings["SESSION_IDLE_TIMEOUT"] == 5
    with pytest.raises(ValueError, match="SHOP_LOGIN_WINDOW"):
        config.load_config({"SECRET_KEY": "k", "SHOP_LOGIN_WINDOW": "soon"})


def test_idempotency_record_keys_are_fixed_size_whatever_the_client_key():
    short, long = keys.idempotency("u:1", "a"), keys.idempotency("u:1", "x" * 200 + "\n:*")
    assert len(short) == len(long) and "*" not in long


def test_log_records_carry_the_replica_and_the_request_id():
    import logging

    from flask import Flask, g

    from shop.logs import RequestContextFilter

    app = Flask("t")
    app.config["REPLICA_NAME"] = "r7"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    RequestContextFilter().filter(record)
    assert (record.replica, record.request_id) == ("-", "-")
    with app.test_request_context("/"):
        g.request_id = "req-9"
        RequestContextFilter().filter(record)
    assert (record.replica, record.request_id) == ("r7", "req-9")


class RecordingEnv(dict):
    """An empty environment that remembers every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return super().get(name, default)


REPO = Path(__file__).resolve().parent.parent
ENV_READERS = ("os.environ.get", "os.getenv")


def test_the_readme_table_lists_every_variable_the_shop_reads():
    env = RecordingEnv()
    config.load_config(env)
    config.load_server_settings(env)
    section = REPO.joinpath("README.md").read_text().split("## Configuration", 1)[1]
    table = section.split("\n## ", 1)[0]
    documented = {
        name for row in table.splitlines() if row.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split(" | ")[0])
    }  # fmt: skip
    assert "SHOP_ERROR_LOG" in env.asked  # the recording sees gunicorn's settings too
    assert env.asked - documented == set()


def _environment_reads(source: str) -> list[int]:
    """Lines that read os.environ (get, a subscript that is not assigned) or call os.getenv."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        called = isinstance(node, ast.Attribute) and ast.unparse(node) in ENV_READERS
        subscripted = (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "os.environ"
            and isinstance(node.ctx, ast.Load)
        )
        if called or subscripted:
            lines.append(node.lineno)
    return lines


def test_only_config_reads_the_environment():
    readers = {
        f"{path.name}:{line}"
        for path in (REPO / "shop").glob("*.py")
        if path.name != "config.py"
        for line in _environment_reads(path.read_text())
    }
    assert readers == set(), "read the setting in shop/config.py instead"
