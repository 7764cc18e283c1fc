"""sessionstore: server-side Flask sessions in Redis that survive concurrency.

    from sessionstore import RedisSessionInterface, redis_from_url
    app.session_interface = RedisSessionInterface(redis_from_url("redis://localhost:6379/0"))

See README.md beside this file for the guarantees and the Redis data model.
"""

from .connection import parse_sentinel_url, redis_from_url, socket_timeout_for
from .errors import (
    TRANSIENT_REDIS_ERRORS,
    NotReplicated,
    StoreUnavailable,
    WriteRefused,
    refused_for_replicas,
)
from .interface import RedisSessionInterface, init_app
from .scripts import NO_WAIT, Durability, LuaScript, run_script
from .session import RedisSession
from .store import SessionInfo, SessionObserver, SessionStore

__all__ = [
    "NO_WAIT",
    "Durability",
    "NotReplicated",
    "RedisSession",
    "RedisSessionInterface",
    "SessionInfo",
    "SessionObserver",
    "SessionStore",
    "StoreUnavailable",
    "TRANSIENT_REDIS_ERRORS",
    "LuaScript",
    "WriteRefused",
    "init_app",
    "parse_sentinel_url",
    "redis_from_url",
    "refused_for_replicas",
    "run_script",
    "socket_timeout_for",
]
