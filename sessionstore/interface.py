"""Flask glue: `RedisSessionInterface` and `init_app`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import redis
from flask import Flask, Request, Response
from flask.sessions import SessionInterface

from .connection import redis_from_url, socket_timeout_for
from .scripts import NO_WAIT, Durability
from .session import RedisNullSession, RedisSession, is_well_formed_sid, new_sid
from .store import SessionObserver, SessionStore


def vary_on_cookie(response: Response) -> None:
    """Add ``Vary: Cookie`` to `response`, joining any Vary the view set.

    Most responses have no Vary yet: then the header is set as it is, which
    costs a tenth of parsing it into werkzeug's HeaderSet and writing it back."""
    if "Vary" in response.headers:
        response.vary.add("Cookie")
    else:
        response.headers["Vary"] = "Cookie"


class SessionIdCookie(SessionInterface):
    """Flask's cookie rules for a server-side session, whose cookie carries only
    its id (``session.sid``): set it, clear it. Any server-side store can share them."""

    def _set_cookie(self, app: Flask, session: Any, response: Response) -> None:
        response.set_cookie(
            self.get_cookie_name(app),
            session.sid,
            expires=self.get_expiration_time(app, session),
            httponly=self.get_cookie_httponly(app),
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app),
            partitioned=self.get_cookie_partitioned(app),
        )
        vary_on_cookie(response)

    def _clear_cookie(self, app: Flask, response: Response) -> None:
        response.delete_cookie(
            self.get_cookie_name(app),
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            httponly=self.get_cookie_httponly(app),
            samesite=self.get_cookie_samesite(app),
            partitioned=self.get_cookie_partitioned(app),
        )
        vary_on_cookie(response)


class RedisSessionInterface(SessionIdCookie):
    """Server-side sessions in Redis: ``app.session_interface = RedisSessionInterface(r)``.

    The cookie carries only a random 264-bit id; everything else is in Redis,
    so every replica of the app sees the same session.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        key_prefix: str = "sess:",
        idle_timeout: timedelta = timedelta(minutes=30),
        absolute_timeout: timedelta = timedelta(hours=12),
        user_key: str = "user_id",
        cookie_name: str | None = None,
        secret_key: str | bytes | None = None,
        durability: Durability = NO_WAIT,
        observer: SessionObserver | None = None,
    ) -> None:
        self.store = SessionStore(
            redis_client,
            key_prefix=key_prefix,
            idle_timeout=idle_timeout,
            absolute_timeout=absolute_timeout,
            secret_key=secret_key,
            durability=durability,
            observer=observer,
        )
        self.user_key = user_key
        self.cookie_name = cookie_name

    null_session_class = RedisNullSession

    def get_cookie_name(self, app: Flask) -> str:
        return self.cookie_name or app.config["SESSION_COOKIE_NAME"]

    def open_session(self, app: Flask, request: Request) -> RedisSession | None:
        if not self.store.bind_secret(app.secret_key, app.config.get("SECRET_KEY_FALLBACKS")):
            return None  # no SECRET_KEY: Flask then gives a null session, as with its own
        cookie = request.cookies.get(self.get_cookie_name(app))
        return RedisSession(
            self.store,
            cookie if is_well_formed_sid(cookie) else None,
            user_key=self.user_key,
            permanent_ms=int(app.permanent_session_lifetime.total_seconds() * 1000),
            refresh_permanent=app.config["SESSION_REFRESH_EACH_REQUEST"],
        )

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        if not isinstance(session, RedisSession):
            return
        if session.accessed:
            vary_on_cookie(response)
        if not session.loaded or response.status_code >= 500:
            return  # untouched, or a failed request whose half-done changes must not land

        sets, deletes = session.changes()
        if session.new and not session.data:
            # Nothing stored, nothing to store. Emptied by this request (a
            # destroy(), say): the cookie goes, as Flask drops an emptied session's.
            if session.modified:
                self._clear_cookie(app, response)
            return
        id_changed = False
        if sets or deletes or session.rotating:
            sid = session.sid or new_sid()
            id_changed = session.new or session.rotating
            saved = self.store.save(
                sid=sid,
                loaded_sid=session._loaded_sid,
                is_new=session.new,
                sets=sets,
                deletes=deletes,
                user=session.user_change(),
                permanent_ms=session.permanent_ms,
            )
            if saved.ttl_ms <= 0:
                # Destroyed, rotated or expired by another request meanwhile, or
                # emptied by this one: stay gone.
                if session.had_cookie or session.modified:
                    self._clear_cookie(app, response)
                return
            session.mark_saved(sid, saved, sets, deletes)
        # A new id must reach the browser. Otherwise Flask's rule: a changed
        # session, or a permanent one whose expiry slides
        # (SESSION_REFRESH_EACH_REQUEST), gets its cookie again.
        if id_changed or self.should_set_cookie(app, session):
            self._set_cookie(app, session, response)


def _as_timedelta(value: Any, default: timedelta) -> timedelta:
    if value is None or value == "":
        return default
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=float(value))


def init_app(app: Flask, redis_client: redis.Redis | None = None) -> RedisSessionInterface:
    """Switch `app` to Redis sessions configured from ``app.config``.

    Reads ``SESSION_REDIS_URL`` (when no client is given), ``SESSION_IDLE_TIMEOUT``
    and ``SESSION_ABSOLUTE_TIMEOUT`` (seconds or timedelta), ``SESSION_KEY_PREFIX``,
    ``SESSION_USER_KEY``, ``SESSION_REPLICA_ACKS`` (replicas that must have a
    write before it counts, default 0) and ``SESSION_REPLICA_ACK_TIMEOUT``
    (seconds or timedelta, default 0.5).
    """
    config = app.config
    durability = Durability(
        replica_acks=int(config.get("SESSION_REPLICA_ACKS") or 0),
        timeout=_as_timedelta(config.get("SESSION_REPLICA_ACK_TIMEOUT"), NO_WAIT.timeout),
    )
    if redis_client is None:
        url = config.get("SESSION_REDIS_URL")
        if not url:
            raise RuntimeError("sessionstore.init_app needs SESSION_REDIS_URL or a redis client")
        wait = durability.timeout.total_seconds() if durability.replica_acks else 0.0
        redis_client = redis_from_url(url, socket_timeout=socket_timeout_for(wait))
    interface = RedisSessionInterface(
        redis_client,
        key_prefix=config.get("SESSION_KEY_PREFIX", "sess:"),
        idle_timeout=_as_timedelta(config.get("SESSION_IDLE_TIMEOUT"), timedelta(minutes=30)),
        absolute_timeout=_as_timedelta(config.get("SESSION_ABSOLUTE_TIMEOUT"), timedelta(hours=12)),
        user_key=config.get("SESSION_USER_KEY", "user_id"),
        durability=durability,
    )
    app.session_interface = interface
    app.extensions["sessionstore"] = interface
    return interface
