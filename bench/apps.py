"""The session variants under test: one tiny Flask app, five ways to keep a session.

Every variant has the same three endpoints and does the same logical work, so
the only difference between their figures is the session machinery:

* ``POST /login``  creates a logged-in session holding a 5-line cart (the same
  logical content in every variant, so bytes per session compare like for like);
* ``GET /read``    only reads the session;
* ``POST /write``  changes one key.

gunicorn loads a variant with ``'bench.apps:create_app("cookie")'``; the Redis
URL comes from ``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from flask import Flask, jsonify, request, session

import sessionstore

VARIANTS = ("bare", "cookie", "flask_session", "flask_session_norefresh", "sessionstore")
"""In display order. ``flask_session_norefresh`` is Flask-Session with
SESSION_REFRESH_EACH_REQUEST=False: with its defaults Flask-Session writes the
whole session back on every request, reads included (README.md, "What a
centralized session costs")."""

REDIS_VARIANTS = ("flask_session", "flask_session_norefresh", "sessionstore")

# Each Redis variant keeps its keys in its own database of the one redis-server,
# so "bytes per session" can simply sum MEMORY USAGE over one database.
REDIS_DB = {"flask_session": 1, "flask_session_norefresh": 2, "sessionstore": 3}

SECRET_KEY = "bench-only-secret-not-used-anywhere-else"
CART_LINES = 5


def session_content(user_number: int) -> dict[str, Any]:
    """What a logged-in shopper's session holds: who they are and a 5-line cart."""
    return {
        "user_id": f"u{user_number}",
        "username": f"shopper{user_number}",
        "cart": {f"p{line}": line for line in range(1, CART_LINES + 1)},
    }


def redis_url(variant: str) -> str:
    base = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
    return f"{base.rstrip('/')}/{REDIS_DB[variant]}"


def _use_flask_session(app: Flask, variant: str) -> None:
    from flask_session import Session

    app.config["SESSION_TYPE"] = "redis"
    # Flask-Session's own choice of client: a plain redis-py client, its defaults.
    app.config["SESSION_REDIS"] = redis.Redis.from_url(redis_url(variant))
    if variant == "flask_session_norefresh":
        app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    Session(app)


def create_app(variant: str) -> Flask:
    """The bench app for `variant` (one of VARIANTS)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    app = Flask(f"bench_{variant}")
    app.secret_key = SECRET_KEY
    if variant.startswith("flask_session"):
        _use_flask_session(app, variant)
    elif variant == "sessionstore":
        app.config["SESSION_REDIS_URL"] = redis_url(variant)
        sessionstore.init_app(app)

    uses_session = variant != "bare"

    @app.post("/login")
    def login() -> Any:
        number = request.args.get("n", 0, type=int)
        if uses_session:
            session.update(session_content(number))
        return jsonify(ok=True)

    @app.get("/read")
    def read() -> Any:
        if not uses_session:
            return jsonify(user=None, lines=0)
        return jsonify(user=session.get("user_id"), lines=len(session.get("cart", ())))

    @app.post("/write")
    def write() -> Any:
        if uses_session:
            session["last_action"] = time.time_ns()
        return jsonify(ok=True)

    return app
