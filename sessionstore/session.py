"""The object behind `flask.session`: a dict that loads itself on first use.

Loading lazily means a request that never touches the session (a health
check, a static file) costs no Redis call at all, and a Redis failure during
the load is raised inside the view, where the app's error handlers see it.
Changes are found by comparing each value's serialized form against what was
loaded, so nested edits (``session["cart"]["a"] += 1``) are saved without
anyone setting ``session.modified``.

The attributes Flask's ``SessionMixin`` defines mean what they mean for
Flask's own cookie session: ``modified`` turns True when the mapping is
changed (set, delete, clear, pop...), ``accessed`` when the session is used at
all, ``permanent`` is the ``_permanent`` key, and ``new`` is True for a
session that is not in Redis (yet).
"""

from __future__ import annotations

import marshal
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Any
from uuid import UUID

from flask.sessions import NullSession, SessionMixin

from . import serializer
from .keys import field_name
from .store import KEEP_USER, SaveResult, SessionStore

SID_BYTES = 33  # 264 bits of entropy: 44 characters, which also names today's key format

# Values of these types cannot change in place: one that was read but never
# assigned is unchanged, and needs no re-serializing to prove it.
_IMMUTABLE = (str, bytes, int, float, type(None), datetime, date, time, UUID)
# 44 characters today; 43 for cookies issued before keys were truncated (keys.py).
_SID_SHAPE = re.compile(r"\A[A-Za-z0-9_-]{43,44}\Z")


def new_sid() -> str:
    return secrets.token_urlsafe(SID_BYTES)


def is_well_formed_sid(value: str | None) -> bool:
    """Cheap shape check before any Redis call: anything else is not ours."""
    return bool(value) and _SID_SHAPE.match(value) is not None


def _fingerprint(value: Any) -> bytes | None:
    """A cheap exact picture of a mutable value, to tell at save time whether it
    changed in place without serializing it to tagged JSON (a tenth of the CPU).

    marshal keeps every exact type apart (list from tuple, 1 from 1.0 and True,
    str from a str subclass such as Markup, which it refuses), so equal bytes
    mean an equal value with equal types: unchanged. Version 2 writes no
    back-references, so the bytes do not depend on reference counts. None
    (refused) means: serialize to find out.
    """
    try:
        return marshal.dumps(value, 2)
    except ValueError:
        return None


class RedisSession(SessionMixin):
    """A server-side session. Behaves as a dict; adds `regenerate()` and `destroy()`."""

    def __init__(
        self,
        store: SessionStore,
        sid: str | None,
        *,
        user_key: str,
        permanent_ms: int = 0,
        refresh_permanent: bool = True,
    ) -> None:
        self._store = store
        self._user_key = user_key
        # How long a permanent session lives without a request (Flask's
        # PERMANENT_SESSION_LIFETIME), and whether a read pushes that back
        # (SESSION_REFRESH_EACH_REQUEST).
        self.permanent_ms = permanent_ms
        self._refresh_permanent = refresh_permanent
        self.sid = sid  # the id in the request's cookie, if well formed
        self.had_cookie = sid is not None
        self._data: dict[str, Any] | None = None
        self._raw: dict[str, str] = {}  # hash field -> stored tagged JSON, as loaded
        # What may differ from Redis at save time: keys assigned or deleted,
        # and mutable values handed out (with a fingerprint taken then).
        self._assigned: set[str] = set()
        self._deleted: set[str] = set()
        self._handed_out: dict[str, bytes | None] = {}
        self._loaded_user: str | None = None
        self._loaded_sid: str | None = None  # set by regenerate(): the id to rotate away from
        self._new = True
        self._created_ms: int | None = None
        self.accessed = False
        self.modified = False

    # -- the dict -----------------------------------------------------------

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self.accessed = True
            loaded = None
            if self.sid:
                permanent_ms = self.permanent_ms if self._refresh_permanent else 0
                loaded = self._store.load(self.sid, permanent_ms=permanent_ms)
            if loaded is None:
                # Unknown, expired or forged id: never adopt it (session fixation);
                # a fresh id is drawn if this session is ever written.
                self._data = {}
                self.sid = None
            else:
                self._data, self._raw, self._created_ms, self._loaded_user = loaded
                self._new = False
        return self._data

    @property
    def new(self) -> bool:  # type: ignore[override]  # SessionMixin has a plain attribute
        """True while the session is not stored in Redis (loads it to find out)."""
        _ = self.data
        return self._new

    @property
    def permanent(self) -> bool:
        """Flask's ``session.permanent``: the ``_permanent`` key (as SessionMixin
        has it, without raising and catching a KeyError on every request)."""
        return self.data.get("_permanent", False)

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self["_permanent"] = bool(value)

    @property
    def created_at(self) -> datetime | None:
        """When the session was first stored (Redis's clock), None while it is new."""
        ms = self._created_ms
        return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)

    def __getitem__(self, key: str) -> Any:
        value = (self._data if self._data is not None else self.data)[key]
        if not isinstance(value, _IMMUTABLE) and key not in self._handed_out:
            self._handed_out[key] = _fingerprint(value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """As dict.get (MutableMapping's goes through a KeyError when the key is missing)."""
        data = self._data if self._data is not None else self.data
        if key not in data:
            return default
        return self[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self._assigned.add(key)
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self._deleted.add(key)
        self.modified = True

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        state = "unloaded" if self._data is None else repr(self._data)
        return f"<RedisSession {state}>"

    @property
    def loaded(self) -> bool:
        return self._data is not None

    # -- lifecycle ----------------------------------------------------------

    def regenerate(self) -> None:
        """Give the session a new id and keep its data (call on login and on any
        privilege change). The old id stops working when this request's session
        is saved, in the same atomic write."""
        _ = self.data  # rotation needs to know whether a stored session exists
        if self._new:
            return  # not stored yet: it gets a fresh id when first saved anyway
        if self._loaded_sid is None:
            self._loaded_sid = self.sid
        self.sid = new_sid()

    def destroy(self) -> None:
        """Delete the session from Redis now. What the request writes afterwards
        goes into a brand-new session; if nothing is written, the cookie is cleared."""
        stored_sid = self._loaded_sid or self.sid
        if stored_sid:
            self._store.destroy(stored_sid)
        self._data, self._raw = {}, {}
        self._assigned, self._deleted, self._handed_out = set(), set(), {}
        self._loaded_user = None
        self._loaded_sid = None
        self.sid = None
        self._new = True
        self._created_ms = None
        self.accessed = True
        self.modified = True  # emptied: like Flask, the cookie goes unless something is written

    # -- what a save needs --------------------------------------------------

    def changes(self) -> tuple[dict[str, str], list[str]]:
        """(fields to set, fields to delete) against what was loaded."""
        data = self.data
        raw = self._raw
        sets: dict[str, str] = {}
        for key in self._assigned:
            if key in data:
                self._diff(key, data[key], raw, sets)
        for key, fingerprint in self._handed_out.items():
            if key in self._assigned or key not in data:
                continue
            value = data[key]
            if fingerprint is None or _fingerprint(value) != fingerprint:
                self._diff(key, value, raw, sets)  # changed in place, perhaps
        deletes = []
        for key in self._deleted:
            field = field_name(key)
            if key not in data and field in raw:
                deletes.append(field)
        return sets, deletes

    @staticmethod
    def _diff(key: str, value: Any, raw: dict[str, str], sets: dict[str, str]) -> None:
        field = field_name(key)
        encoded = serializer.dumps(value)
        if raw.get(field) != encoded:
            sets[field] = encoded

    def user_change(self) -> Any:
        """The user id to record if it changed, else KEEP_USER."""
        value = self.data.get(self._user_key)
        user = None if value is None else str(value)
        if not self._new and user == self._loaded_user:
            return KEEP_USER
        return user

    @property
    def rotating(self) -> bool:
        return self._loaded_sid is not None

    def mark_saved(
        self, sid: str, saved: SaveResult, sets: dict[str, str], deletes: list[str]
    ) -> None:
        """After a successful save, this object mirrors Redis again."""
        self.sid = sid
        raw = self._raw
        raw.update(sets)
        for field in deletes:
            raw.pop(field, None)
        self._loaded_sid = None
        if self._new:
            self._created_ms = saved.created_ms
        self._new = False


class RedisNullSession(NullSession):
    """`flask.session` in an app without a SECRET_KEY, as in Flask: an empty
    session that can be read, and raises Flask's "no secret key" error when
    written, regenerated or destroyed."""

    def regenerate(self) -> None:
        self.clear()  # NullSession's writers raise Flask's own message

    def destroy(self) -> None:
        self.clear()
