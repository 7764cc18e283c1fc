"""What a request costs sessionstore, and that the cheaper paths keep every promise.

The speed itself is measured by the benchmark (bench/RESULTS.md), never here.
These tests pin down the behaviour the cheaper paths must keep: a held
connection that breaks is replaced without an error, a frozen Redis still
costs one timeout, an ordinary write leaves the user index alone, sessions
stored under the old, longer keys still load, and hooks still see every
round trip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import signal
import time
from datetime import timedelta

import pytest
import redis
from flask import Flask
from sessionstore_support import COOKIE, SECRET, cookie_of, make_app, session_keys

from sessionstore import SessionObserver, redis_from_url
from sessionstore.scripts import round_trips


def with_cookie(app: Flask, sid: str):
    client = app.test_client()
    client.set_cookie(COOKIE, sid)
    return client


# -- the held connections -----------------------------------------------------------


def test_a_connection_redis_closed_is_replaced_without_an_error(redis_server, redis_client):
    app = make_app(redis_from_url(redis_server.url))
    client = app.test_client()
    client.post("/set/a/1")
    assert client.get("/read").json == {"a": "1"}  # a connection is held now
    redis_client.client_kill_filter(_type="normal", skipme=True)  # as a restart would
    assert client.get("/read").json == {"a": "1"}
    client.post("/set/b/2")
    assert client.get("/read").json == {"a": "1", "b": "2"}


def test_a_session_read_from_a_frozen_redis_fails_after_one_timeout(own_redis):
    timeout = 0.5
    app = make_app(redis_from_url(own_redis.url, socket_timeout=timeout))
    client = app.test_client()
    client.post("/set/a/1")
    client.get("/read")  # the read's script is loaded, a connection held
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = client.get("/read")
        took = time.monotonic() - started
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    assert response.status_code == 503
    assert timeout * 0.9 <= took < timeout * 1.5  # one timeout: never retried after one
    assert client.get("/read").json == {"a": "1"}


def test_after_a_fork_the_child_opens_connections_of_its_own(redis_server, redis_client):
    app = make_app(redis_from_url(redis_server.url))
    client = app.test_client()
    client.post("/set/a/1")
    client.get("/read")
    calls = round_trips(app.session_interface.store.client)
    parent_connections = list(calls._idle)
    assert parent_connections
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        ok = not calls._idle and client.get("/read").json == {"a": "1"}
        ok = ok and all(c not in parent_connections for c in calls._idle)
        os.write(writer, b"1" if ok else b"0")
        os._exit(0)
    os.close(writer)
    try:
        assert os.read(reader, 1) == b"1"
    finally:
        os.close(reader)
        os.waitpid(pid, 0)
    assert client.get("/read").json == {"a": "1"}  # the parent's connections still work


# -- the read's own bytes -----------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["sess:", "sessions-\u00e9t\u00e9:"])
def test_a_read_sends_exactly_what_redis_py_would_send(redis_server, redis_client, prefix):
    sent = []

    class Recording(redis.Connection):
        def send_packed_command(self, command, check_health=True):
            sent.append(b"".join(command) if isinstance(command, list) else command)
            super().send_packed_command(command, check_health)

    app = make_app(redis_from_url(redis_server.url, connection_class=Recording), key_prefix=prefix)
    client = app.test_client()
    client.post("/set/a/1")
    sent.clear()
    assert client.get("/read").json == {"a": "1"}
    (key,) = redis_client.keys(prefix.encode() + b"*")
    conn = redis.Connection()  # never connected: only its packer is used
    assert sent == [b"".join(conn.pack_commands([("HGETALL", key), ("PTTL", key)]))]


# -- hooks see every round trip ---------------------------------------------------------


def test_round_trips_are_reported_to_an_observer_that_asks(redis_server, redis_client):
    class Timings(SessionObserver):
        def __init__(self) -> None:
            self.seen: list[tuple[str, float, BaseException | None]] = []

        def round_trip(self, command, seconds, error):
            self.seen.append((command, seconds, error))

    timings = Timings()
    client = make_app(redis_from_url(redis_server.url), observer=timings).test_client()
    client.post("/set/a/1")  # a new session: one save, no load
    client.get("/read")  # one load: HGETALL (and PTTL) pipelined
    assert [(command, error) for command, _, error in timings.seen] == [
        ("EVALSHA", None),
        ("HGETALL", None),
    ]
    assert all(0 < seconds < 5 for _, seconds, _ in timings.seen)


def test_a_client_that_hooks_execute_command_still_sees_every_command(redis_server, redis_client):
    class Counting(redis.Redis):
        commands: list[str] = []

        def execute_command(self, *args, **options):
            type(self).commands.append(str(args[0]))
            return super().execute_command(*args, **options)

    app = make_app(redis_from_url(redis_server.url, redis_class=Counting))
    client = app.test_client()
    client.post("/set/a/0")
    client.post("/set/a/1")  # both scripts are loaded into Redis by now
    Counting.commands.clear()
    client.post("/set/b/2")
    client.get("/read")
    assert Counting.commands == ["EVALSHA"] * 3  # load + save; load


# -- the data model -------------------------------------------------------------------


def test_an_ordinary_write_leaves_the_expiry_and_the_user_index_alone(redis_server, redis_client):
    app = make_app(redis_from_url(redis_server.url))
    client = app.test_client()
    client.post("/login/alice")
    redis_client.config_resetstat()
    client.post("/set/cart/full")
    written = set(redis_client.info("commandstats"))
    assert not written & {"cmdstat_zadd", "cmdstat_zremrangebyscore", "cmdstat_pexpire"}
    assert client.get("/read").json == {"cart": "full", "user_id": "alice"}


def test_a_write_past_half_life_pushes_the_expiry_and_the_index_entry_back(
    redis_server, redis_client
):
    app = make_app(redis_from_url(redis_server.url), idle_timeout=timedelta(seconds=60))
    client = app.test_client()
    client.post("/login/alice")
    (key,) = session_keys(redis_client)
    redis_client.pexpire(key, 20_000)  # as if 40 of its 60 s had passed
    before = redis_client.zscore("sess:user:alice", key)
    client.post("/set/cart/full")
    assert redis_client.pttl(key) > 55_000
    assert redis_client.zscore("sess:user:alice", key) > before
    assert 55_000 < redis_client.pttl("sess:user:alice") <= 60_000


def test_new_sessions_are_keyed_by_a_128_bit_hmac(redis_server, redis_client):
    client = make_app(redis_from_url(redis_server.url)).test_client()
    client.post("/login/alice")
    (key,) = session_keys(redis_client)
    assert len(cookie_of(client)) == 44
    assert len(key) == len("sess:") + 22  # base64url of 16 bytes
    assert redis_client.zrange("sess:user:alice", 0, -1) == [key]


def test_a_session_stored_under_the_full_length_key_of_an_older_cookie_still_loads(
    redis_server, redis_client
):
    # What a cookie issued before keys were truncated (43 characters) left in
    # Redis: the session under the full HMAC-SHA256 of its id, written here by
    # hand the way that version derived it.
    sid = "o" * 43
    derived = hmac.new(SECRET.encode(), b"sessionstore/session-key/v1", hashlib.sha256).digest()
    digest = hmac.new(derived, sid.encode(), hashlib.sha256).digest()
    key = "sess:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    redis_client.hset(key, mapping={"!c": int(time.time() * 1000), "cart": '"full"'})
    redis_client.pexpire(key, 60_000)

    app = make_app(redis_from_url(redis_server.url))
    client = with_cookie(app, sid)
    assert client.get("/read").json == {"cart": "full"}
    client.post("/set/seen/yes")  # written back where it is
    assert session_keys(redis_client) == [key]
    assert client.get("/read").json == {"cart": "full", "seen": "yes"}
    client.post("/login/alice")  # a new id: today's shape
    (new_key,) = session_keys(redis_client)
    assert len(new_key) == len("sess:") + 22
    assert client.get("/read").json == {"cart": "full", "seen": "yes", "user_id": "alice"}


@pytest.mark.parametrize("cookie", ["o" * 42, "o" * 45])
def test_cookies_of_neither_length_are_not_looked_up(redis_server, redis_client, cookie):
    app = make_app(redis_from_url(redis_server.url))
    client = with_cookie(app, cookie)
    redis_client.config_resetstat()
    assert client.get("/read").json == {}
    assert "cmdstat_evalsha" not in redis_client.info("commandstats")


# -- the serializer's shortcut ------------------------------------------------------------


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize(
    "value",
    [0, -7, 10**30, True, False, None, "plain", 'a "quote", a \\ and a\nnewline', "h\u00e9llo"],
)
def test_the_serializers_shortcut_writes_what_flasks_serializer_writes(value, ensure_ascii):
    from flask.json.tag import TaggedJSONSerializer

    from sessionstore import serializer

    app = Flask("serializer")
    app.json.ensure_ascii = ensure_ascii
    with app.app_context():
        assert serializer.dumps(value) == TaggedJSONSerializer().dumps(value)
        assert serializer.loads(serializer.dumps(value)) == value
