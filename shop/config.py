"""All settings of the shop, read from environment variables in this one place.

Every other module of the shop reads ``app.config`` (from :func:`load_config`)
or, for gunicorn, :class:`ServerSettings` (from :func:`load_server_settings`,
used by shop/gunicorn_conf.py); only this module looks at ``os.environ``. The
complete list of variables, with defaults and meanings, is the Configuration
table of the README (tests/test_shop_units.py checks that it names every
variable read here, and that no other module of the shop reads the
environment). Two are written rather than set by hand: shop/gunicorn_conf.py
sets ``PROMETHEUS_MULTIPROC_DIR`` (read by prometheus_client itself, too) and
``SHOP_REPLICA_STARTED`` in the gunicorn master, for its workers.

Importing this module loads nothing but the standard library: gunicorn's
master reads it before any worker exists (see shop/gunicorn_conf.py).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Only ever used outside production, and said so loudly: a fixed value (not a
# random one) so that several local replicas can read each other's sessions.
DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105

TRUE_WORDS = {"1", "true", "yes", "on"}

# Where sessions and carts live (SHOP_STATE). "redis": the shared store, the
# point of this project. "memory": each replica's own process memory, the
# design this project exists to replace, kept as a demonstration of what a
# crash then costs (shop/replicamemory.py); never in production.
STATE_REDIS = "redis"
STATE_MEMORY = "memory"
STATES = (STATE_REDIS, STATE_MEMORY)


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in TRUE_WORDS


def _number(env: Mapping[str, str], name: str, default: Any, kind: Callable[[str], Any]) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return _number(env, name, default, int)


def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    return _number(env, name, default, float)


def _replica_name(env: Mapping[str, str]) -> str:
    return env.get("REPLICA_NAME") or socket.gethostname()


def _state(env: Mapping[str, str], production: bool) -> str:
    state = env.get("SHOP_STATE", "").strip().lower() or STATE_REDIS
    if state not in STATES:
        raise ValueError(f"SHOP_STATE must be one of {', '.join(STATES)}, got {state!r}")
    if state == STATE_MEMORY and production:
        raise RuntimeError(
            "SHOP_STATE=memory is a demonstration (sessions and carts die with the replica "
            "that holds them) and is refused with SHOP_ENV=production"
        )
    return state


def load_config(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build the app's config from `env` (default: ``os.environ``), then `overrides`.

    Raises ``RuntimeError`` when production is asked for without a SECRET_KEY,
    because a guessable key would let anyone forge sessions, or with
    ``SHOP_STATE=memory``, which loses state by design.
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
    state = _state(env, production)
    settings = {
        "SHOP_PRODUCTION": production,
        "SHOP_STATE": state,
        "SECRET_KEY": secret,
        "REDIS_URL": env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "REPLICA_NAME": _replica_name(env),
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
        # Addresses, CIDR ranges or "unix" (shop/proxy.py). Not 127.0.0.1 by
        # default: any local process can reach a loopback port, and would then
        # choose the address the login throttle counts.
        "TRUSTED_PROXIES": [
            p.strip() for p in env.get("SHOP_TRUSTED_PROXIES", "unix").split(",") if p.strip()
        ],
        "SEED_CATALOG": _flag(env.get("SHOP_SEED_CATALOG"), True),
        "HEARTBEAT_INTERVAL": _float(env, "SHOP_HEARTBEAT_INTERVAL", 1.0),
        # Process details on the cluster page for every client, not only this host's.
        "CLUSTER_DETAILS": _flag(env.get("SHOP_CLUSTER_DETAILS"), False),
        "REPLICA_STARTED": _float(env, "SHOP_REPLICA_STARTED", None),
        "SHOP_REPLICA_ACKS": _int(env, "SHOP_REPLICA_ACKS", 0),
        "SHOP_REPLICA_ACK_TIMEOUT": _float(env, "SHOP_REPLICA_ACK_TIMEOUT", 0.5),
        "SESSION_REPLICA_ACKS": _int(env, "SESSION_REPLICA_ACKS", 0),
        "SESSION_REPLICA_ACK_TIMEOUT": _float(env, "SESSION_REPLICA_ACK_TIMEOUT", 0.5),
        "PROMETHEUS_MULTIPROC_DIR": env.get("PROMETHEUS_MULTIPROC_DIR") or None,
        # The HTML forms carry a CSRF token (shop/csrf.py); tests may turn the
        # check off. The JSON API never needs one (it only takes application/json).
        "CSRF_ENABLED": True,
    }
    settings.update(overrides)
    return settings


@dataclass(frozen=True)
class ServerSettings:
    """What gunicorn needs for one replica (shop/gunicorn_conf.py says why each default)."""

    replica: str
    bind: list[str]
    workers: int
    threads: int
    timeout: int
    graceful_timeout: int
    keepalive: int
    request_read_timeout: float
    local_users: list[str]
    forwarded_allow_ips: str
    access_log: str | None
    error_log: str
    control_socket: str | None
    metrics_dir: Path


def load_server_settings(env: Mapping[str, str] | None = None) -> ServerSettings:
    """gunicorn's settings from `env` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    bind = env.get("SHOP_BIND", "127.0.0.1:8000").split(",")
    return ServerSettings(
        replica=_replica_name(env),
        bind=bind,
        workers=_workers(env),
        threads=_int(env, "SHOP_THREADS", 4),
        timeout=_int(env, "SHOP_TIMEOUT", 30),
        graceful_timeout=_int(env, "SHOP_GRACEFUL_TIMEOUT", 30),
        keepalive=_int(env, "SHOP_KEEPALIVE", 75),
        request_read_timeout=_float(env, "SHOP_REQUEST_READ_TIMEOUT", 5.0),
        # Names or uids; empty: the replica's own user (shop/worker.py).
        local_users=[u.strip() for u in env.get("SHOP_LOCAL_USERS", "").split(",") if u.strip()],
        forwarded_allow_ips=env.get("SHOP_FORWARDED_ALLOW_IPS", "127.0.0.1"),
        access_log=env.get("SHOP_ACCESS_LOG") or None,
        error_log=env.get("SHOP_ERROR_LOG", "-"),
        control_socket=env.get("SHOP_CONTROL_SOCKET") or None,
        metrics_dir=_metrics_dir(env, bind[0]),
    )


def _workers(env: Mapping[str, str]) -> int:
    """SHOP_WORKERS; with SHOP_STATE=memory one, and no more.

    Memory mode keeps sessions and carts in the process: nginx's sticky hash
    sends a shopper to one replica, but gunicorn spreads that replica's
    connections over its workers, and a second worker process would not know
    the session the first one holds. One worker (its threads share the memory)
    makes the demonstration lose state only when the replica dies, as it would
    in a single-process server.
    """
    memory = env.get("SHOP_STATE", "").strip().lower() == STATE_MEMORY
    workers = _int(env, "SHOP_WORKERS", 1 if memory else 2)
    if memory and workers != 1:
        raise ValueError(
            f"SHOP_STATE=memory keeps state in one process: SHOP_WORKERS must be 1, got {workers}"
        )
    return workers


def _metrics_dir(env: Mapping[str, str], first_bind: str) -> Path:
    """PROMETHEUS_MULTIPROC_DIR if set, else a private temp dir keyed by the bind
    address (replicas on one host must not add up each other's counters)."""
    given = env.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        return Path(given)
    key = "".join(c if c.isalnum() else "_" for c in first_bind)
    return Path(tempfile.gettempdir()) / f"shop-metrics-{os.getuid()}-{key}"
