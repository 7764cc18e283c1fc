"""The session store: every Redis operation sessionstore performs.

The Redis data model is documented in `sessionstore.keys`. Each public method
is one round trip (a read that must also push the idle TTL back, or look
under an old secret's key, two), and every write is a single Lua script, so
a session is never half-written and concurrent requests on different
replicas cannot interleave inside one save. Loading a session is the hot path of every
request that uses one, so `load` is written for speed: two plain read
commands pipelined, and a script only when the read must also write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any, NamedTuple

import redis

from . import serializer
from .errors import TRANSIENT_REDIS_ERRORS, NotReplicated, StoreUnavailable
from .keys import META_CREATED, META_PREFIX, META_USER, KeySpace, field_name
from .scripts import NO_WAIT, Durability, LuaScript, evalsha, round_trips

log = logging.getLogger(__name__)

KEEP_USER = object()
"""Passed as `user` to `save` when the request did not change who is logged in."""


def _text(value: bytes | str | int | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _ms_to_datetime(ms: str | int | None) -> datetime | None:
    return datetime.fromtimestamp(int(ms) / 1000, UTC) if ms is not None else None


# A session read, HGETALL and PTTL of one key, in Redis's protocol (RESP): the
# hot path formats these bytes itself (see RoundTrips.pipeline's `packed`).
_READ = b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%b\r\n*2\r\n$4\r\nPTTL\r\n$%d\r\n%b\r\n"


class LoadedSession(NamedTuple):
    """What one load returns: the values, and their raw form for change detection."""

    data: dict[str, Any]
    raw: dict[str, str]  # hash field -> stored tagged JSON, the snapshot saves diff against
    created_ms: int  # ms since the epoch, Redis's clock
    user_id: str | None

    @property
    def created_at(self) -> datetime:
        return _ms_to_datetime(self.created_ms)


class SaveResult(NamedTuple):
    """What one save did: the session's TTL (0: gone, nothing written; -1: emptied,
    so deleted), whether it is permanent, and when it was created (ms, Redis's clock)."""

    ttl_ms: int
    permanent: bool
    created_ms: int


class SessionObserver:
    """What a SessionStore reports as it works: subclass it to count or audit.

    The store calls these after the round trip that did the work, in the
    request's thread, so keep them cheap. Here they do nothing.
    """

    def session_created(self) -> None:
        """A new session was first stored."""

    def sessions_ended(self, count: int) -> None:
        """`count` sessions were deleted on purpose (destroy, revoke_user, emptied)."""

    def round_trip(self, command: str, seconds: float, error: BaseException | None) -> None:
        """One round trip to Redis took `seconds`; `error` if it failed. For latency
        metrics. `command`: ``HGETALL`` for a session read (its PTTL pipelined
        with it), ``EVALSHA`` for a script, ``PIPELINE`` for a script with a WAIT.
        The store times round trips only when a subclass overrides this.
        """


@dataclass(frozen=True)
class SessionInfo:
    """One live session of a user, as `user_sessions` reports it."""

    key: str  # the Redis key: an HMAC of the cookie id, useless as a cookie
    created_at: datetime
    last_seen: datetime  # last write or TTL refresh: accurate to within half the idle timeout
    expires_at: datetime


class SessionStore:
    """Sessions in Redis for one application (one key prefix, one secret)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str = "sess:",
        idle_timeout: timedelta = timedelta(minutes=30),
        absolute_timeout: timedelta = timedelta(hours=12),
        secret_key: str | bytes | None = None,
        durability: Durability = NO_WAIT,
        observer: SessionObserver | None = None,
    ) -> None:
        if idle_timeout <= timedelta(0) or absolute_timeout <= timedelta(0):
            raise ValueError("session timeouts must be positive")
        self.client = client
        self._calls = round_trips(client)
        self.key_prefix = key_prefix
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self._idle_ms = int(idle_timeout.total_seconds() * 1000)
        self._absolute_ms = int(absolute_timeout.total_seconds() * 1000)
        self._secret_key = secret_key
        self._keys = KeySpace(key_prefix, secret_key) if secret_key else None
        # With replicas (Sentinel), a write is acknowledged only once enough
        # replicas have it, so a failover cannot lose a login the user saw.
        self.durability = durability
        self.observer = observer or SessionObserver()
        self._timed = type(self.observer).round_trip is not SessionObserver.round_trip
        self._scripts = {
            name: LuaScript.load(__package__, "common", name)
            for name in ("load", "save", "destroy", "user_sessions", "revoke_user")
        }

    # -- keys -------------------------------------------------------------

    @property
    def keys(self) -> KeySpace:
        """The key space; derived from the Flask app's SECRET_KEY unless one was given."""
        if self._keys is None:
            from flask import current_app

            self.bind_secret(current_app.secret_key, current_app.config.get("SECRET_KEY_FALLBACKS"))
        if self._keys is None:
            raise RuntimeError("sessionstore needs the app's SECRET_KEY to derive session keys")
        return self._keys

    def bind_secret(
        self, secret_key: str | bytes | None, fallbacks: Sequence[str | bytes] | None = None
    ) -> bool:
        """Derive keys from the app's secret (unless the store was given its own) and the
        old secrets still accepted during a rotation; False when there is no secret at all.

        Called on every request: the keys are derived again only when the secrets change.
        """
        secret = self._secret_key or secret_key
        if not secret:
            return False
        keys = self._keys
        if keys is None or not keys.matches(secret, fallbacks):
            self._keys = KeySpace(self.key_prefix, secret, fallbacks)
        return True

    def _run(self, name: str, keys: list[str], args: list[Any], *, durable: bool = False) -> Any:
        """One script, one round trip; `durable` writes wait for the replicas."""
        durability = self.durability if durable else NO_WAIT
        command = "PIPELINE" if durability.replica_acks else "EVALSHA"
        return self._round_trip(
            command, evalsha, self._calls, self._scripts[name], keys, args, durability
        )

    def _round_trip(self, command: str, call: Any, *args: Any) -> Any:
        """`call(*args)`, one round trip: a Redis that cannot be reached becomes
        StoreUnavailable, and the observer hears of it when it asks to."""
        started = time.perf_counter() if self._timed else 0.0
        error = None
        try:
            return call(*args)
        except TRANSIENT_REDIS_ERRORS as exc:
            error = exc
            raise StoreUnavailable(f"session store unavailable: {exc}") from exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            if self._timed:
                self.observer.round_trip(command, time.perf_counter() - started, error)

    # -- one session --------------------------------------------------------

    def load(self, sid: str, *, permanent_ms: int = 0) -> LoadedSession | None:
        """The session for cookie id `sid`, or None if there is none (or it is unreadable).

        `permanent_ms` is how long a permanent session lives without a request
        (Flask's PERMANENT_SESSION_LIFETIME); 0 when reading it must not push
        its expiry back (SESSION_REFRESH_EACH_REQUEST off).

        A read is HGETALL and PTTL pipelined: one round trip, no script, nothing
        written. Only when the idle TTL is due to be pushed back (less than
        half of it left), or the session is not under the current secret's key
        while fallback secrets are configured, does a read run `load.lua`,
        which checks again and moves the TTL (or the session) atomically.
        A client that hooks ``execute_command`` always gets the script: one
        command per round trip, which its hook sees.
        """
        keys = self.keys
        key = keys.session(sid)
        if not self._calls.direct:
            flat = self._run("load", [key], self._load_args(permanent_ms))
        else:
            packed = key.encode()
            packed = _READ % (len(packed), packed, len(packed), packed)
            fields, ttl = self._round_trip("HGETALL", self._calls.pipeline, self._read(key), packed)
            for reply in (fields, ttl):
                if isinstance(reply, Exception):
                    raise reply
            if not fields:
                flat = None  # not under the current key: maybe under an old one
            else:
                loaded = self._parse(key, fields)
                if loaded is None or not self._push_due(loaded, ttl, permanent_ms):
                    return loaded
                # Due: load.lua checks again and pushes the TTL back, atomically.
                flat = self._run("load", [key], self._load_args(permanent_ms))
        if flat is None:
            old_keys = keys.fallback_sessions(sid)
            if not old_keys:
                return None
            # Not under the current secret: maybe under an old one (a key
            # rotation). A second round trip, paid only by cookies the current
            # secret does not know; the script moves the session to `key`.
            flat = self._run("load", [key, *old_keys], self._load_args(permanent_ms))
            if flat is None:
                return None
        return self._parse(key, flat)

    def _load_args(self, permanent_ms: int) -> list[Any]:
        """load.lua's ARGV (built only when it runs, not on an ordinary read)."""
        return [self._idle_ms, self._absolute_ms, self.keys.user_index_prefix, permanent_ms]

    @staticmethod
    def _read(key: str) -> list[tuple[str, ...]]:
        return [("HGETALL", key), ("PTTL", key)]  # _READ says the same, packed

    def _push_due(self, loaded: LoadedSession, ttl: int, permanent_ms: int) -> bool:
        """Whether a read must push the idle TTL back: less than half of the
        session's lifetime left (load.lua checks the same, atomically)."""
        lifetime = permanent_ms if loaded.raw.get("_permanent") == "true" else self._idle_ms
        return 0 <= ttl < lifetime / 2

    @staticmethod
    def _parse(key: str, reply: Any) -> LoadedSession | None:
        try:
            return _parse(reply)
        except (serializer.CorruptValue, KeyError, ValueError) as exc:
            # Damaged or foreign data: start afresh rather than fail the request.
            log.warning("ignoring unreadable session %s: %s", key, exc)
            return None

    def save(
        self,
        *,
        sid: str,
        loaded_sid: str | None,
        is_new: bool,
        sets: dict[str, str],
        deletes: list[str],
        user: Any = KEEP_USER,
        permanent_ms: int = 0,
    ) -> SaveResult:
        """Write a request's changes. The result's `ttl_ms` is 0 if the session is
        gone: destroyed, rotated or expired meanwhile (nothing was written), and
        -1 if these changes left it with no values (it was deleted).

        `permanent_ms` is how long a permanent session lives without a request."""
        keys, args = self._save_call(sid, loaded_sid, is_new, sets, deletes, user, permanent_ms)
        ttl_ms, permanent, created_ms = self._run("save", keys, args, durable=True)
        if ttl_ms < 0:  # emptied, so deleted: ended on purpose, as by destroy()
            self.observer.sessions_ended(1)
        elif is_new and ttl_ms:
            self.observer.session_created()
        return SaveResult(ttl_ms, bool(permanent), created_ms)

    def _save_call(self, sid, loaded_sid, is_new, sets, deletes, user, permanent_ms) -> tuple:
        """The KEYS and ARGV of save.lua for one save (the arguments of `save`)."""
        key = self.keys.session(sid)
        old = self.keys.session(loaded_sid) if loaded_sid else key
        pairs = [part for item in sets.items() for part in item]
        user_args = ["keep", ""] if user is KEEP_USER else ["set", "" if user is None else user]
        args = [
            "new" if is_new else "update",
            self._idle_ms,
            self._absolute_ms,
            self.keys.user_index_prefix,
            *user_args,
            permanent_ms,
            len(sets),
            *pairs,
            *deletes,
        ]
        return [key, old], args

    def import_sessions(
        self,
        sessions: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        user_key: str = "user_id",
        batch: int = 1000,
    ) -> int:
        """Store brand-new sessions in bulk: (cookie id, values) pairs, each written
        exactly as its first save through the interface would write it (the same
        script, so the same data model, TTLs and per-user index entry when the
        values hold `user_key`). For migrations and fixtures, such as a
        benchmark's million sessions; requests save through the interface.

        `batch` saves share one round trip (a pipeline, not a transaction: each
        save is still one atomic script); with `durability`, each batch ends with
        one WAIT. Returns how many sessions were stored.
        """
        script = self._scripts["save"]
        acks = self.durability.replica_acks
        stored = 0

        def flush(pipe: Any) -> None:
            nonlocal stored
            if acks:
                pipe.wait(acks, self.durability.timeout_ms)
            replies = pipe.execute()
            if acks and replies[-1] < acks:
                raise NotReplicated(f"a batch reached {replies[-1]} of {acks} replica(s)")
            stored += sum(1 for reply in replies[: len(replies) - bool(acks)] if reply[0] > 0)

        try:
            self.client.script_load(script.text)
            pipe = self.client.pipeline(transaction=False)
            for sid, values in sessions:
                sets = {field_name(k): serializer.dumps(v) for k, v in values.items()}
                user = values.get(user_key)
                keys, args = self._save_call(
                    sid, None, True, sets, [], None if user is None else str(user), 0
                )
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                if len(pipe) >= batch:
                    flush(pipe)
            if len(pipe):
                flush(pipe)
        except TRANSIENT_REDIS_ERRORS as exc:
            raise StoreUnavailable(f"session store unavailable: {exc}") from exc
        for _ in range(stored):
            self.observer.session_created()
        return stored

    def destroy(self, sid: str) -> bool:
        """Delete the session now (and its entry in its user's index), under the
        current secret's key and under every fallback's, so a session a key
        rotation has not moved yet cannot come back."""
        keys = [self.keys.session(sid), *self.keys.fallback_sessions(sid)]
        existed = bool(self._run("destroy", keys, [self.keys.user_index_prefix], durable=True))
        if existed:
            self.observer.sessions_ended(1)
        return existed

    # -- one user -----------------------------------------------------------

    def user_sessions(self, user_id: Any) -> list[SessionInfo]:
        """The live sessions of `user_id`, oldest first."""
        rows = self._run("user_sessions", [self.keys.user_index(str(user_id))], [])
        sessions = [
            SessionInfo(
                key=_text(key),
                created_at=_ms_to_datetime(_text(created)),
                last_seen=_ms_to_datetime(_text(active) or _text(created)),
                expires_at=_ms_to_datetime(int(float(_text(expires)))),
            )
            for key, created, active, expires in rows
        ]
        return sorted(sessions, key=lambda s: s.created_at)

    def revoke_user(self, user_id: Any) -> int:
        """Log `user_id` out everywhere at once; returns how many sessions ended."""
        index = self.keys.user_index(str(user_id))
        ended = int(self._run("revoke_user", [index], [], durable=True))
        if ended:
            self.observer.sessions_ended(ended)
        return ended


def _parse(flat: list[Any] | dict[Any, Any]) -> LoadedSession:
    """A session from HGETALL's reply: a field -> value map (RESP3) or a flat
    field/value list (RESP2, or a script's reply), of bytes, or text when the
    client decodes: tagged JSON values, metadata fields apart. Raises
    KeyError, ValueError or serializer.CorruptValue for data it cannot read."""
    if type(flat) is dict:
        flat = list(chain.from_iterable(flat.items()))
    if flat and type(flat[0]) is bytes:
        # One decode for the lot: JSON never holds a raw NUL, so the join splits
        # back exactly, unless a session key has one (then item by item).
        text = b"\0".join(flat).decode().split("\0")
        flat = text if len(text) == len(flat) else [item.decode() for item in flat]
    data: dict[str, Any] = {}
    raw: dict[str, str] = {}
    created = user = None
    loads = serializer.loads
    if len(flat) % 2:
        raise ValueError("an odd HGETALL reply")
    for i in range(0, len(flat), 2):
        field = flat[i]
        value = flat[i + 1]
        name = field
        if field[:1] == META_PREFIX:  # keys.session_key_of, inlined: this is every request
            if field[1:2] != META_PREFIX:
                if field == META_CREATED:
                    created = int(value)
                elif field == META_USER:
                    user = value
                continue
            name = field[1:]
        raw[field] = value
        data[name] = loads(value)
    if created is None:
        raise KeyError(META_CREATED)
    return LoadedSession(data, raw, created, user)


__all__ = [
    "KEEP_USER",
    "LoadedSession",
    "SaveResult",
    "SessionInfo",
    "SessionObserver",
    "SessionStore",
]
