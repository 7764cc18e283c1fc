"""Helpers for the shop tests: building apps, reading Redis, parsing HTML forms.

Kept out of conftest so the test files can import them by name; the fixtures
that use them live in conftest.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import redis
import requests
from flask import Flask
from flask.testing import FlaskClient

from shop import create_app
from shop.cluster import appserver, procs

TEST_SECRET = "test-secret-key-0123456789abcdef0123456789abcdef"
# Fast hashing for tests; one test checks the production default (scrypt).
FAST_HASH = "pbkdf2:sha256:1000"
PASSWORD = "correct horse battery"
SESSION_COOKIE = "session"


def make_app(redis_url: str, replica: str = "replica-a", **overrides: Any) -> Flask:
    """A shop app on `redis_url`, configured for tests (CSRF on unless overridden)."""
    config = {
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET,
        "REPLICA_NAME": replica,
        "PASSWORD_HASH_METHOD": FAST_HASH,
        "TESTING": True,
        "CSRF_ENABLED": True,
    }
    config.update(overrides)
    return create_app(config)


@dataclass(frozen=True)
class GunicornReplica:
    """A real gunicorn replica of the shop we started: where it answers, its log, its pid."""

    name: str
    port: int
    log_path: Path
    pid: int

    @property
    def url(self) -> str:
        return f"http://{procs.LOOPBACK}:{self.port}"


# A replica imports Flask and the shop and seeds the catalog before it answers:
# a few seconds on a busy machine, so half a minute means it is broken.
REPLICA_READY_TIMEOUT = 30


@contextmanager
def gunicorn_replica(
    name: str,
    redis_url: str,
    workdir: Path,
    *,
    app: str = appserver.WSGI_APP,
    env: dict[str, str] | None = None,
) -> Iterator[GunicornReplica]:
    """The shop (or `app`, a wrapper of it) under gunicorn with the shop's gunicorn
    settings, as the launcher starts it; ready when it yields, stopped by pid after."""
    port = procs.free_port()
    log_path = workdir / f"{name}.log"
    environment = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET,
        "REPLICA_NAME": name,
        "SHOP_WORKERS": "2",
        "SHOP_THREADS": "2",
        "SHOP_PASSWORD_HASH": FAST_HASH,
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics" / name),
        **(env or {}),
    }
    argv = appserver.gunicorn_argv(app, bind=f"{procs.LOOPBACK}:{port}", name=name)
    proc = procs.spawn(argv, log_path=log_path, env=environment, cwd=workdir)
    replica = GunicornReplica(name, port, log_path, proc.pid)
    try:
        procs.wait_until(
            lambda: requests.get(f"{replica.url}/readyz", timeout=1).status_code == 200,
            timeout=REPLICA_READY_TIMEOUT,
            what=f"{name} to answer /readyz (log: {log_path})",
        )
        yield replica
    finally:
        procs.stop_process(proc.pid, timeout=15)


def snapshot(client: redis.Redis, *, sessions: bool = True) -> dict[str, Any]:
    """Every key with its type and full value: compared before and after a request.

    `sessions=False` leaves out session keys, for requests that legitimately
    pass a flash message through the session.
    """
    readers = {
        "string": client.get,
        "hash": client.hgetall,
        "list": lambda k: client.lrange(k, 0, -1),
        "set": lambda k: sorted(client.smembers(k)),
        "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
    }
    state = {}
    for key in sorted(client.scan_iter(count=1000)):
        if not sessions and key.startswith("sess:"):
            continue
        kind = client.type(key)
        state[key] = (kind, readers[kind](key))
    return state


def register(client: FlaskClient, username: str, password: str = PASSWORD) -> None:
    response = client.post("/api/register", json={"username": username, "password": password})
    assert response.status_code == 201, response.get_json()


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> None:
    response = client.post("/api/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()


def register_and_login(client: FlaskClient, username: str) -> None:
    register(client, username)
    login(client, username)


def session_cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie(SESSION_COOKIE)
    return cookie.value if cookie else None


class Form:
    """A form found in a page: where it posts and its fields' default values."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.fields: dict[str, str] = {}


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(values.get("action", "")))
        elif tag == "input" and self.forms and "name" in values:
            self.forms[-1].fields[values["name"]] = values.get("value", "")


def forms(html: str) -> list[Form]:
    """All forms of a page."""
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def form(html: str, action: str, **match: str) -> Form:
    """The first form posting to `action` whose fields include `match`."""
    for candidate in forms(html):
        fields = candidate.fields
        if candidate.action == action and all(fields.get(k) == v for k, v in match.items()):
            return candidate
    raise AssertionError(f"no form for {action} with {match} in page")


def submit(
    client: FlaskClient, page: str, action: str, match: dict[str, str] | None = None, **values: str
):
    """Load `page`, fill the matching form with `values` and post it, as a browser would."""
    html = client.get(page).get_data(as_text=True)
    found = form(html, action, **(match or {}))
    return client.post(action, data={**found.fields, **values})


def text_of(html: str, element_id: str) -> str:
    """The text inside the element with `element_id` (simple, non-nested elements)."""
    found = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</', html, re.S)
    assert found, f"#{element_id} not in page"
    return found.group(1).strip()
