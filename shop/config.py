"""All settings of the shop, read from environment variables in this one place.

Every other module reads ``app.config``; only this module looks at
``os.environ``, so the table below is the complete list of knobs.

- ``REDIS_URL`` (``redis://127.0.0.1:6379/0``): the store for sessions and
  shop data; ``rediss://``, ``unix://`` and ``redis+sentinel://`` work too.
- ``SECRET_KEY`` (a dev-only constant, with a warning): signs cookies and keys
  the session ids in Redis; required when ``SHOP_ENV=production``.
- ``SHOP_ENV`` (``development``): ``production`` refuses a missing SECRET_KEY
  and makes the session cookie Secure.
- ``REPLICA_NAME`` (the host name): shown in ``X-Served-By`` and page footers.
- ``SESSION_IDLE_TIMEOUT`` (1800 s) and ``SESSION_ABSOLUTE_TIMEOUT`` (43200 s).
- ``SESSION_COOKIE_SECURE`` (on in production): send the cookie over HTTPS only.
- ``SHOP_MAX_BODY_BYTES`` (16384): larger request bodies get a 413.
- ``SHOP_LOGIN_MAX_PER_USER`` (5), ``SHOP_LOGIN_MAX_PER_IP`` (30) login attempts
  per ``SHOP_LOGIN_WINDOW`` (300 s), then 429 with Retry-After.
- ``SHOP_PASSWORD_HASH`` (``scrypt``): werkzeug hash method (scrypt or pbkdf2).
- ``SHOP_TRUSTED_PROXIES`` (``127.0.0.1``): peers whose X-Forwarded-For counts.
- ``SHOP_SEED_CATALOG`` (1): seed the products at start-up (only what is absent).
- ``SHOP_HEARTBEAT_INTERVAL`` (1.0 s): how often each worker writes its
  heartbeat for the cluster page (shop/heartbeat.py); 0 turns it off.
- ``SHOP_REPLICA_STARTED`` (unix time; set by shop/gunicorn_conf.py in the
  master): the replica's start, so its uptime survives worker restarts.
- ``SHOP_REPLICA_ACKS`` (0) and ``SHOP_REPLICA_ACK_TIMEOUT`` (0.5 s): with
  Redis replicas (Sentinel), every domain write (cart, checkout, register,
  idempotency record) is acknowledged only once this many replicas confirm
  it (WAIT, pipelined with the write); short of that in time, a 503 with
  Retry-After. ``SESSION_REPLICA_ACKS`` / ``SESSION_REPLICA_ACK_TIMEOUT`` do
  the same for session writes (read by sessionstore.init_app).
- ``PROMETHEUS_MULTIPROC_DIR``: read by prometheus_client itself (see
  shop/metrics.py); shop/gunicorn_conf.py sets one per replica.

The gunicorn settings (``SHOP_BIND``, ``SHOP_WORKERS``, ...) live in
``shop/gunicorn_conf.py`` because gunicorn reads them before the app exists.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

# Only ever used outside production, and said so loudly: a fixed value (not a
# random one) so that several local replicas can read each other's sessions.
DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105

TRUE_WORDS = {"1", "true", "yes", "on"}


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in TRUE_WORDS


def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def load_config(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build the app's config from `env` (default: ``os.environ``), then `overrides`.

    Raises ``RuntimeError`` when production is asked for without a SECRET_KEY,
    because a guessable key would let anyone forge sessions.
    """
    env = os.environ if env is None else env
    overrides = dict(overrides or {})
    production = env.get("SHOP_ENV", "development").strip().lower() == "production"
    secret = overrides.get("SECRET_KEY") or env.get("SECRET_KEY", "")
    if not secret:
        if production:
            raise RuntimeError("SECRET_KEY must be set when SHOP_ENV=production")
        log.warning("SECRET_KEY is not set: using the insecure development key")
        secret = DEV_SECRET_KEY
    settings = {
        "SHOP_PRODUCTION": production,
        "SECRET_KEY": secret,
        "REDIS_URL": env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "REPLICA_NAME": env.get("REPLICA_NAME") or socket.gethostname(),
        "SESSION_IDLE_TIMEOUT": _int(env, "SESSION_IDLE_TIMEOUT", 1800),
        "SESSION_ABSOLUTE_TIMEOUT": _int(env, "SESSION_ABSOLUTE_TIMEOUT", 12 * 3600),
        "SESSION_COOKIE_SECURE": _flag(env.get("SESSION_COOKIE_SECURE"), production),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "MAX_CONTENT_LENGTH": _int(env, "SHOP_MAX_BODY_BYTES", 16 * 1024),
        "LOGIN_MAX_PER_USER": _int(env, "SHOP_LOGIN_MAX_PER_USER", 5),
        "LOGIN_MAX_PER_IP": _int(env, "SHOP_LOGIN_MAX_PER_IP", 30),
        "LOGIN_WINDOW": _int(env, "SHOP_LOGIN_WINDOW", 300),
        "PASSWORD_HASH_METHOD": env.get("SHOP_PASSWORD_HASH", "scrypt"),
        "TRUSTED_PROXIES": [
            p.strip() for p in env.get("SHOP_TRUSTED_PROXIES", "127.0.0.1").split(",") if p.strip()
        ],
        "SEED_CATALOG": _flag(env.get("SHOP_SEED_CATALOG"), True),
        "HEARTBEAT_INTERVAL": _float(env, "SHOP_HEARTBEAT_INTERVAL", 1.0),
        "REPLICA_STARTED": _float(env, "SHOP_REPLICA_STARTED", None),
        "SHOP_REPLICA_ACKS": _int(env, "SHOP_REPLICA_ACKS", 0),
        "SHOP_REPLICA_ACK_TIMEOUT": _float(env, "SHOP_REPLICA_ACK_TIMEOUT", 0.5),
        "SESSION_REPLICA_ACKS": _int(env, "SESSION_REPLICA_ACKS", 0),
        "SESSION_REPLICA_ACK_TIMEOUT": _float(env, "SESSION_REPLICA_ACK_TIMEOUT", 0.5),
        "PROMETHEUS_MULTIPROC_DIR": env.get("PROMETHEUS_MULTIPROC_DIR") or None,
        # The JSON API is exempted from CSRF (it only takes application/json);
        # the HTML forms carry a token bound to the session.
        "WTF_CSRF_TIME_LIMIT": None,
    }
    settings.update(overrides)
    return settings
