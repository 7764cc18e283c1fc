"""pytest plugin: every Flask app a foreign test suite builds gets another session interface.

Loaded by ``scripts/upstream_session_suites.py`` into Flask's and Flask-Login's
own test suites (``-p upstream_swap_session``); nothing here is copied from
them. ``SWAP_SESSION`` picks the interface: ``cookie`` (Flask's own, nothing
swapped), ``sessionstore`` or ``flask-session`` (0.8, Redis backend), each with
its defaults. ``SWAP_SESSION_REDIS`` is the redis-server to use; it is emptied
before every test so no test sees another's sessions.

Two swaps, both made before any test module is imported:
- every ``Flask`` instance that would use Flask's default interface gets the
  chosen one, right after ``Flask.__init__``;
- ``flask.sessions.SecureCookieSessionInterface`` becomes the chosen interface,
  so a test that subclasses Flask's interface to override a method (a
  per-request cookie name, say) subclasses the chosen one instead, as a user
  porting that subclass would.
"""

from __future__ import annotations

import os

import flask.sessions
import pytest
import redis
from flask import Flask

MODE = os.environ.get("SWAP_SESSION", "cookie")
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        # Timeouts so that a dead server fails a test instead of hanging the run.
        _client = redis.Redis.from_url(
            os.environ["SWAP_SESSION_REDIS"], socket_timeout=5, socket_connect_timeout=2
        )
    return _client


def _interface_class() -> type:
    """The chosen interface as a class that needs no arguments, like Flask's own."""
    if MODE == "sessionstore":
        from sessionstore import RedisSessionInterface

        class SwappedSessionstore(RedisSessionInterface):
            def __init__(self) -> None:
                super().__init__(_redis())

        return SwappedSessionstore
    if MODE == "flask-session":
        from flask_session.redis import RedisSessionInterface

        class SwappedFlaskSession(RedisSessionInterface):
            def __init__(self) -> None:
                super().__init__(None, client=_redis())

        return SwappedFlaskSession
    raise ValueError(f"unknown SWAP_SESSION {MODE!r}")


def pytest_configure(config: pytest.Config) -> None:
    if MODE == "cookie":
        return
    interface_class = _interface_class()
    flask_default = Flask.session_interface
    original_init = Flask.__init__

    def init_then_swap(self: Flask, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        if self.session_interface is flask_default:  # not one the test chose itself
            self.session_interface = interface_class()

    Flask.__init__ = init_then_swap
    flask.sessions.SecureCookieSessionInterface = interface_class


def pytest_runtest_setup(item: pytest.Item) -> None:
    if MODE != "cookie":
        _redis().flushdb()
