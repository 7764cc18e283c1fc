"""Helpers shared by the sessionstore tests: a small app, counting round trips,
reading Redis.

Kept out of conftest so the test files can import them by name.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import flask_session
import redis
from flask import Flask, abort, jsonify, session
from markupsafe import Markup

from sessionstore import RedisSessionInterface, StoreUnavailable
from shop.cluster import procs

COOKIE = "session"  # Flask's default session cookie name


class CountingConnection(redis.Connection):
    """Counts what the client sends: one send is one round trip."""

    sends = 0

    def send_packed_command(self, command, check_health=True):
        type(self).sends += 1
        return super().send_packed_command(command, check_health)


def cookie_of(client) -> str | None:
    """The session cookie a test client holds, if any."""
    cookie = client.get_cookie(COOKIE)
    return cookie.value if cookie else None


def session_keys(r: redis.Redis) -> list[str]:
    """Every session hash in Redis (not the per-user indexes)."""
    return [k for k in r.scan_iter("sess:*") if not k.startswith("sess:user:")]


def start_sentinel(folder: Path, redis_port: int) -> tuple[subprocess.Popen, int]:
    """A real Sentinel on loopback watching the Redis on `redis_port` as service "shop"
    (quorum 1), its files in `folder`: (process, port), ready. The caller stops it."""
    port = procs.free_port()
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
        f"sentinel monitor shop 127.0.0.1 {redis_port} 1\n"
    )
    proc = procs.spawn(
        [procs.find_binary("redis-server"), str(conf), "--sentinel"],
        log_path=folder / "sentinel.log",
    )
    try:
        procs.wait_until(lambda: procs.redis_ping(port), timeout=15, what="a Sentinel")
    except BaseException:
        procs.stop_process(proc.pid, timeout=5)
        raise
    return proc, port


SECRET = "test-secret-key"


def make_app(client: redis.Redis, name: str = "replica", *, peer: bool = False, **options) -> Flask:
    """A tiny app whose views exercise the session the way a shop would.

    With `peer`, the same app runs on Flask-Session 0.8 (Redis backend, its
    defaults) instead, so the usual choice can be shown failing side by side.
    """
    app = Flask(name)
    app.secret_key = SECRET
    app.config.update(options.pop("config", {}))
    if peer:
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client)
        flask_session.Session(app)
    else:
        app.session_interface = RedisSessionInterface(client, **options)
    app.gate = threading.Event()  # holds /slow-set until the test releases it
    app.loaded = threading.Event()

    @app.get("/read")
    def read():
        return jsonify(dict(session))

    @app.get("/noop")
    def noop():
        return "no session here"

    @app.post("/set/<key>/<value>")
    def set_value(key, value):
        session[key] = value
        return "ok"

    @app.post("/del/<key>")
    def delete_value(key):
        session.pop(key, None)
        return "ok"

    @app.post("/nested/<item>")
    def nested(item):
        cart = session.setdefault("cart", {})
        cart[item] = cart.get(item, 0) + 1  # no session.modified anywhere
        return "ok"

    @app.post("/nested-via-get/<item>")
    def nested_via_get(item):
        session.get("cart")[item] = "changed in place"
        return "ok"

    @app.post("/slow-set/<key>/<value>")
    def slow_set(key, value):
        dict(session)  # load now, like a request that reads early ...
        app.loaded.set()
        assert app.gate.wait(10)  # ... and writes late
        session[key] = value
        return "ok"

    @app.post("/login/<user>")
    def login(user):
        session.regenerate()
        session["user_id"] = user
        return "ok"

    @app.post("/logout")
    def logout():
        session.destroy() if hasattr(session, "destroy") else session.clear()
        return "ok"

    @app.post("/logout-and-flash")
    def logout_and_flash():
        session.destroy()
        session["flash"] = "bye"
        return "ok"

    @app.post("/boom")
    def boom():
        session["half_done"] = True
        abort(500)

    @app.post("/values")
    def values():
        session.update(
            raw=b"\x00\xffbytes",
            when=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
            pair=(1, "two"),
            markup=Markup("<b>saved</b>"),
            ident=uuid.UUID("12345678-1234-5678-1234-567812345678"),
            nested={"list": [1, 2, {"deep": (3, 4)}]},
        )
        return "ok"

    @app.get("/values")
    def get_values():
        return repr({key: session[key] for key in sorted(session)})

    @app.errorhandler(StoreUnavailable)
    def unavailable(exc):
        return jsonify(error="store_unavailable"), 503

    @app.errorhandler(500)
    def server_error(exc):
        # A failure while saving (after the view) arrives here, as the README says.
        if isinstance(getattr(exc, "original_exception", None), StoreUnavailable):
            return unavailable(exc.original_exception)
        return "internal error", 500

    return app
