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

import re
import secrets
from collections.abc import Iterator
from datetime import date, datetime, time
from typing import Any
from uuid import UUID

from flask.sessions import NullSession, SessionMixin

from . import serializer
from .keys import field_name
from .store import KEEP_USER, SessionStore

SID_BYTES = 32  # 256 bits of entropy

# Values of these types cannot change in place: one that was read but never
# assigned is unchanged, and needs no re-serializing to prove it.
_IMMUTABLE = (str, bytes, int, float, type(None), datetime, date, time, UUID)
_SID_SHAPE = re.compile(r"\A[A-Za-z0-9_-]{43}\Z")


def new_sid() -> str:
    return secrets.token_urlsafe(SID_BYTES)


def is_well_formed_sid(value: str | None) -> bool:
    """Cheap shape check before any Redis call: anything else is not ours."""
    return bool(value) and _SID_SHAPE.match(value) is not None


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
        self._raw: dict[str, str] = {}
        # Keys whose value may have changed: assigned, or handed out as a
        # mutable value. Only these are re-serialized and compared at save.
        self._touched: set[str] = set()
        self._loaded_user: str | None = None
        self._loaded_sid: str | None = None  # set by regenerate(): the id to rotate away from
        self._new = True
        self.created_at: datetime | None = None
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
                self._data = loaded.data
                self._raw = loaded.raw
                self._loaded_user = loaded.user_id
                self.created_at = loaded.created_at
                self._new = False
        return self._data

    @property
    def new(self) -> bool:  # type: ignore[override]  # SessionMixin has a plain attribute
        """True while the session is not stored in Redis (loads it to find out)."""
        _ = self.data
        return self._new

    def __getitem__(self, key: str) -> Any:
        value = self.data[key]
        if not isinstance(value, _IMMUTABLE):
            self._touched.add(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self._touched.add(key)
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self.data[key]
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
        self._touched = set()
        self._loaded_user = None
        self._loaded_sid = None
        self.sid = None
        self._new = True
        self.created_at = None
        self.accessed = True
        self.modified = True  # emptied: like Flask, the cookie goes unless something is written

    # -- what a save needs --------------------------------------------------

    def changes(self) -> tuple[dict[str, str], list[str]]:
        """(fields to set, fields to delete) against what was loaded."""
        data = self.data
        sets: dict[str, str] = {}
        for key in self._touched.intersection(data):
            field = field_name(key)
            encoded = serializer.dumps(data[key])
            if self._raw.get(field) != encoded:
                sets[field] = encoded
        present = {field_name(key) for key in data}
        deletes = [field for field in self._raw if field not in present]
        return sets, deletes

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

    def mark_saved(self, sid: str, sets: dict[str, str], deletes: list[str]) -> None:
        """After a successful save, this object mirrors Redis again."""
        self.sid = sid
        self._raw.update(sets)
        for field in deletes:
            self._raw.pop(field, None)
        self._loaded_sid = None
        self._new = False


class RedisNullSession(NullSession):
    """`flask.session` in an app without a SECRET_KEY, as in Flask: an empty
    session that can be read, and raises Flask's "no secret key" error when
    written, regenerated or destroyed."""

    def regenerate(self) -> None:
        self.clear()  # NullSession's writers raise Flask's own message

    def destroy(self) -> None:
        self.clear()
