"""sessionstore's guarantees, each against a real redis-server.

Each numbered point of the foundation issue has a test here that fails when
the point is broken. Two Flask app instances sharing one Redis stand in for
two replicas.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from flask import Flask, session
from markupsafe import Markup
from sessionstore_support import (
    COOKIE,
    SECRET,
    CountingConnection,
    cookie_of,
    make_app,
    session_keys,
    start_sentinel,
)

import sessionstore
from sessionstore import Durability, StoreUnavailable, redis_from_url
from shop.cluster import procs


@pytest.fixture
def client_factory(redis_server):
    made = []

    def factory(**kwargs):
        pool = redis.ConnectionPool(host=procs.LOOPBACK, port=redis_server.port, **kwargs)
        client = redis.Redis(connection_pool=pool)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


@pytest.fixture
def app(redis_client, client_factory) -> Flask:
    return make_app(client_factory())


def with_cookie(app: Flask, sid: str):
    client = app.test_client()
    client.set_cookie(COOKIE, sid)
    return client


def two_replicas_sharing_a_session(
    client_factory, first_write: str, *, peer: bool = False
) -> tuple[Flask, Flask, str]:
    """Two app instances on one Redis, and the cookie of a session that replica
    one created with `first_write`."""
    one = make_app(client_factory(), "one", peer=peer)
    two = make_app(client_factory(), "two", peer=peer)
    first = one.test_client()
    first.post(first_write)
    return one, two, cookie_of(first)


def run_slow_write_racing(one: Flask, two: Flask, sid: str, racer) -> None:
    """Replica one loads the session, then `racer` runs (a path POSTed to replica
    two, or a callable), then replica one writes what it had loaded plus a key."""
    slow = threading.Thread(target=lambda: with_cookie(one, sid).post("/slow-set/a/from-one"))
    slow.start()
    assert one.loaded.wait(5)
    if callable(racer):
        racer()
    else:
        with_cookie(two, sid).post(racer)
    one.gate.set()
    slow.join(10)


# 1. No lost updates ---------------------------------------------------------


def test_concurrent_requests_on_two_replicas_changing_different_keys_both_survive(
    redis_client, client_factory
):
    one, two, sid = two_replicas_sharing_a_session(client_factory, "/set/seed/1")
    # While replica one holds its (stale) copy, replica two writes another key.
    run_slow_write_racing(one, two, sid, "/set/b/from-two")

    assert with_cookie(two, sid).get("/read").json == {
        "seed": "1",
        "a": "from-one",
        "b": "from-two",
    }


def test_nested_change_is_saved_without_setting_modified(app):
    client = app.test_client()
    client.post("/nested/apple")
    client.post("/nested/apple")
    client.post("/nested/pear")
    assert client.get("/read").json == {"cart": {"apple": 2, "pear": 1}}


def test_in_place_change_of_a_value_read_with_get_is_saved(app):
    client = app.test_client()
    client.post("/nested/apple")
    client.post("/nested-via-get/apple")
    assert client.get("/read").json == {"cart": {"apple": "changed in place"}}


def test_small_sessions_and_user_indexes_stay_in_redis_compact_encoding(app, redis_client):
    client = app.test_client()
    client.post("/login/alice")
    client.post("/nested/apple")
    (key,) = session_keys(redis_client)
    assert len(key) < 64  # fits a listpack entry, as a member of the user index
    assert redis_client.object("encoding", key) == "listpack"
    assert redis_client.object("encoding", "sess:user:alice") == "listpack"


def test_only_changed_fields_are_written(app, redis_client):
    client = app.test_client()
    client.post("/set/a/1")
    client.post("/set/b/2")
    redis_client.config_resetstat()
    client.post("/set/b/3")
    stats = redis_client.info("commandstats")
    # One HSET of the changed field plus the bookkeeping HSET of "last active";
    # field "a" is never rewritten.
    assert stats["cmdstat_hset"]["calls"] == 2
    assert client.get("/read").json == {"a": "1", "b": "3"}


def test_deleted_key_is_removed_from_redis(app, redis_client):
    client = app.test_client()
    client.post("/set/a/1")
    client.post("/set/b/2")
    client.post("/del/a")
    (key,) = session_keys(redis_client)
    assert "a" not in redis_client.hkeys(key)
    assert client.get("/read").json == {"b": "2"}


# 2. No resurrection ---------------------------------------------------------


def test_slow_request_finishing_after_logout_does_not_resurrect_session(
    redis_client, client_factory
):
    one, two, sid = two_replicas_sharing_a_session(client_factory, "/login/alice")
    run_slow_write_racing(one, two, sid, "/logout")

    assert session_keys(redis_client) == []
    assert with_cookie(two, sid).get("/read").json == {}


def test_slow_request_finishing_after_rotation_does_not_revive_old_id(redis_client, client_factory):
    one, two, old_sid = two_replicas_sharing_a_session(client_factory, "/set/cart/full")
    rotated = with_cookie(two, old_sid)
    run_slow_write_racing(one, two, old_sid, lambda: rotated.post("/login/bob"))

    assert len(session_keys(redis_client)) == 1
    assert with_cookie(two, old_sid).get("/read").json == {}
    assert rotated.get("/read").json == {"cart": "full", "user_id": "bob"}


# 3. Cheap reads -------------------------------------------------------------


def test_read_only_request_costs_one_round_trip_and_writes_nothing(redis_client, client_factory):
    app = make_app(client_factory(connection_class=CountingConnection))
    client = app.test_client()
    client.post("/set/a/1")
    client.get("/read")  # warm: a connection is held
    redis_client.config_resetstat()
    CountingConnection.sends = 0

    response = client.get("/read")

    assert response.json == {"a": "1"}
    assert CountingConnection.sends == 1
    commands = {name for name in redis_client.info("commandstats") if "config" not in name}
    assert commands == {"cmdstat_hgetall", "cmdstat_pttl"}  # no writes, and no script


def test_request_that_never_touches_the_session_costs_nothing(redis_client, client_factory):
    app = make_app(client_factory(connection_class=CountingConnection))
    client = app.test_client()
    client.post("/set/a/1")
    CountingConnection.sends = 0
    client.get("/noop")
    assert CountingConnection.sends == 0


def test_new_visitor_who_writes_nothing_creates_no_key_and_gets_no_cookie(app, redis_client):
    client = app.test_client()
    response = client.get("/read")
    assert "Set-Cookie" not in response.headers
    assert redis_client.dbsize() == 0


def test_idle_ttl_is_refreshed_only_when_less_than_half_remains(redis_client, client_factory):
    app = make_app(client_factory(), idle_timeout=timedelta(seconds=4))
    client = app.test_client()
    client.post("/set/a/1")
    (key,) = session_keys(redis_client)

    redis_client.config_resetstat()
    client.get("/read")
    assert "cmdstat_pexpire" not in redis_client.info("commandstats")

    redis_client.pexpire(key, 1500)  # as if 2.5 s of the 4 s had passed
    redis_client.config_resetstat()
    client.get("/read")
    assert redis_client.info("commandstats")["cmdstat_pexpire"]["calls"] == 1
    assert redis_client.pttl(key) > 3000


def test_nothing_is_saved_when_the_response_is_a_server_error(app, redis_client):
    client = app.test_client()
    assert client.post("/boom").status_code == 500
    assert redis_client.dbsize() == 0
    client.post("/set/a/1")
    client.post("/boom")
    assert client.get("/read").json == {"a": "1"}


# 4. Ids never at rest -------------------------------------------------------


def test_redis_holds_no_usable_cookie(app, redis_client):
    client = app.test_client()
    client.post("/login/alice")
    client.post("/set/a/1")
    sid = cookie_of(client)
    assert len(sid) >= 43  # 256 bits, url-safe base64

    everything = []
    for key in redis_client.scan_iter("*"):
        everything.append(key)
        kind = redis_client.type(key)
        if kind == "hash":
            everything.extend(str(x) for pair in redis_client.hgetall(key).items() for x in pair)
        elif kind == "zset":
            everything.extend(redis_client.zrange(key, 0, -1))
    assert everything
    assert not any(sid in item for item in everything)


def test_session_key_is_an_hmac_of_the_id_under_the_app_secret(redis_client):
    one = make_app(redis_client)
    client = one.test_client()
    client.post("/set/a/1")
    sid = cookie_of(client)

    other_secret = make_app(redis_client)
    other_secret.secret_key = "another-secret"
    assert with_cookie(other_secret, sid).get("/read").json == {}
    assert with_cookie(one, sid).get("/read").json == {"a": "1"}


# 5. Idle and absolute timeouts ---------------------------------------------


def test_idle_session_expires_by_redis_ttl(redis_client, client_factory):
    app = make_app(client_factory(), idle_timeout=timedelta(milliseconds=600))
    client = app.test_client()
    client.post("/set/a/1")
    (key,) = session_keys(redis_client)
    assert 0 < redis_client.pttl(key) <= 600
    procs.wait_until(lambda: redis_client.exists(key) == 0, timeout=5, what="idle expiry")
    assert client.get("/read").json == {}


def test_absolute_timeout_ends_an_active_session(redis_client, client_factory):
    app = make_app(
        client_factory(),
        idle_timeout=timedelta(seconds=10),
        absolute_timeout=timedelta(milliseconds=1500),
    )
    client = app.test_client()
    client.post("/set/n/0")
    (key,) = session_keys(redis_client)
    assert redis_client.pttl(key) <= 1500  # min(idle, absolute left)
    started = time.monotonic()
    i = 0
    while client.get("/read").json and time.monotonic() - started < 5:
        i += 1
        client.post(f"/set/n/{i}")  # busy, never idle
        time.sleep(0.1)
    assert 1.2 < time.monotonic() - started < 3
    assert client.get("/read").json == {}


# 6. Rotation and destruction --------------------------------------------------


def test_regenerate_gives_new_id_same_data_and_kills_the_old_id(app, redis_client):
    client = app.test_client()
    client.post("/set/cart/3-items")
    old_sid = cookie_of(client)

    client.post("/login/alice")
    new_sid = cookie_of(client)

    assert new_sid != old_sid
    assert client.get("/read").json == {"cart": "3-items", "user_id": "alice"}
    assert with_cookie(app, old_sid).get("/read").json == {}
    assert len(session_keys(redis_client)) == 1


def test_destroy_removes_session_and_clears_cookie(app, redis_client):
    client = app.test_client()
    client.post("/login/alice")
    sid = cookie_of(client)
    response = client.post("/logout")
    assert "session=;" in response.headers["Set-Cookie"]
    assert cookie_of(client) is None
    assert redis_client.dbsize() == 0
    assert with_cookie(app, sid).get("/read").json == {}


def test_writes_after_destroy_go_into_a_brand_new_session(app, redis_client):
    client = app.test_client()
    client.post("/login/alice")
    old_sid = cookie_of(client)
    client.post("/logout-and-flash")
    assert cookie_of(client) not in (None, old_sid)
    assert client.get("/read").json == {"flash": "bye"}
    assert with_cookie(app, old_sid).get("/read").json == {}


# 7. Per-user index ----------------------------------------------------------


def test_user_sessions_lists_every_live_session_of_a_user(app, redis_client):
    laptop, phone, other = app.test_client(), app.test_client(), app.test_client()
    laptop.post("/login/alice")
    phone.post("/login/alice")
    other.post("/login/bob")
    with app.app_context():
        sessions = app.session_interface.store.user_sessions("alice")
    assert len(sessions) == 2
    now = datetime.now(UTC)
    for info in sessions:
        assert abs((info.created_at - now).total_seconds()) < 5
        assert info.last_seen >= info.created_at
        assert info.expires_at > now
        assert cookie_of(laptop) not in info.key and cookie_of(phone) not in info.key


def test_revoke_user_logs_the_user_out_everywhere(app):
    laptop, phone, other = app.test_client(), app.test_client(), app.test_client()
    for client, user in ((laptop, "alice"), (phone, "alice"), (other, "bob")):
        client.post(f"/login/{user}")
    with app.app_context():
        assert app.session_interface.store.revoke_user("alice") == 2
        assert app.session_interface.store.user_sessions("alice") == []
    assert laptop.get("/read").json == {}
    assert phone.get("/read").json == {}
    assert other.get("/read").json == {"user_id": "bob"}


def test_user_index_does_not_outlive_its_sessions(redis_client, client_factory):
    app = make_app(client_factory(), idle_timeout=timedelta(milliseconds=700))
    for _ in range(3):
        app.test_client().post("/login/alice")
    index = "sess:user:alice"
    assert redis_client.zcard(index) == 3
    assert 0 < redis_client.pttl(index) <= 700
    procs.wait_until(lambda: redis_client.exists(index) == 0, timeout=5, what="index expiry")


def test_logout_removes_the_session_from_its_user_index(app, redis_client):
    client = app.test_client()
    client.post("/login/alice")
    client.post("/logout")
    assert redis_client.zcard("sess:user:alice") == 0


def test_rotation_moves_the_index_entry_to_the_new_key(app, redis_client):
    client = app.test_client()
    client.post("/login/alice")
    client.post("/login/alice")  # e.g. a privilege change
    (key,) = session_keys(redis_client)
    assert redis_client.zrange("sess:user:alice", 0, -1) == [key]


def test_imported_sessions_are_stored_as_a_login_stores_them(app, redis_client):
    """`import_sessions` (bulk, pipelined) writes what a login through the
    interface writes: the same fields, TTL and user-index entry, readable by a request."""
    client = app.test_client()
    client.post("/login/alice")
    (logged_in,) = session_keys(redis_client)
    imported_sid = "i" * 43
    store = app.session_interface.store
    with app.app_context():
        stored = store.import_sessions([(imported_sid, {"user_id": "alice"})], batch=1)
        imported = store.keys.session(imported_sid)
        assert stored == 1 and len(store.user_sessions("alice")) == 2
    assert set(redis_client.hkeys(imported)) == set(redis_client.hkeys(logged_in))
    assert redis_client.hget(imported, "user_id") == redis_client.hget(logged_in, "user_id")
    assert 0 < redis_client.pttl(imported) <= redis_client.pttl(logged_in) + 1000
    assert set(redis_client.zrange("sess:user:alice", 0, -1)) == {logged_in, imported}
    assert with_cookie(app, imported_sid).get("/read").json == {"user_id": "alice"}


# 8. Safe values -------------------------------------------------------------


def test_tagged_values_round_trip_like_flask_cookie_sessions(app):
    client = app.test_client()
    client.post("/values")
    text = client.get("/values").text
    assert "b'\\x00\\xffbytes'" in text
    assert "datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.timezone.utc)" in text
    assert "(1, 'two')" in text
    assert "Markup('<b>saved</b>')" in text
    assert "UUID('12345678-1234-5678-1234-567812345678')" in text
    assert "{'deep': (3, 4)}" in text


def test_values_are_json_never_pickle(app, redis_client):
    client = app.test_client()
    client.post("/values")
    (key,) = session_keys(redis_client)
    raw = redis_client.hget(key, "pair")
    assert raw == '{" t":[1,"two"]}'


def test_corrupt_value_in_redis_gives_an_empty_session_and_is_logged(app, redis_client, caplog):
    client = app.test_client()
    client.post("/set/a/1")
    (key,) = session_keys(redis_client)
    redis_client.hset(key, "a", b"\x80\x04pickle-ish")
    response = client.get("/read")
    assert response.status_code == 200 and response.json == {}
    assert "ignoring unreadable session" in caplog.text


# 9. Hostile cookies ---------------------------------------------------------


@pytest.mark.parametrize(
    "cookie",
    [
        "A" * 43,  # well formed, unknown (forged or expired)
        "not a session id",
        "x" * 4000,  # oversized
        "../../etc/passwd",
        "\u00e9\u00e9\u00e9",
        "",
    ],
)
def test_hostile_cookie_gives_a_fresh_empty_session(app, redis_client, cookie):
    client = with_cookie(app, cookie)
    response = client.get("/read")
    assert response.status_code == 200
    assert response.json == {}
    assert redis_client.dbsize() == 0
    client.post("/set/a/1")
    assert cookie_of(client) != cookie  # never adopts an id it did not issue


# 10. Redis trouble is explicit -----------------------------------------------


def test_dead_redis_raises_store_unavailable_quickly():
    client = redis_from_url(
        f"redis://{procs.LOOPBACK}:{procs.free_port()}/0", retries=1, backoff_cap=0.05
    )
    app = make_app(client)
    started = time.monotonic()
    response = app.test_client(use_cookies=False).get(
        "/read", headers={"Cookie": f"{COOKIE}={'A' * 43}"}
    )
    assert response.status_code == 503
    assert response.json == {"error": "store_unavailable"}
    assert time.monotonic() - started < 3


def test_store_unavailable_during_save_is_raised_not_swallowed(own_redis):
    app = make_app(redis_from_url(own_redis.url, retries=0))
    seen = []

    @app.errorhandler(500)
    def server_error(exc):
        seen.append(exc.original_exception)
        return "store down", 503

    @app.post("/set-after-stop")
    def set_after_stop():
        session["a"] = 1
        own_redis.stop()
        return "ok"

    response = app.test_client().post("/set-after-stop")
    assert response.status_code == 503
    assert isinstance(seen[0], StoreUnavailable)


def test_service_resumes_when_redis_returns(own_redis):
    app = make_app(redis_from_url(own_redis.url, retries=0))
    client = app.test_client()
    client.post("/set/a/1")
    own_redis.stop()
    assert client.get("/read").status_code == 503
    own_redis.start()
    assert client.get("/read").json == {"a": "1"}  # AOF kept it


def test_client_has_timeouts_and_bounded_retries():
    client = redis_from_url("redis://127.0.0.1:1/0", socket_timeout=1.5, retries=4)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 1.5
    assert kwargs["socket_connect_timeout"] == 0.5  # sessionstore.connection.CONNECT_TIMEOUT
    assert kwargs["retry"].get_retries() == 4


# 11. Cookie flags -----------------------------------------------------------


def test_cookie_flags_default_to_flasks(app):
    response = app.test_client().post("/set/a/1")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    # Flask's SESSION_COOKIE_SAMESITE defaults to None, and None means no
    # attribute (browsers then mostly apply Lax); set "Lax" to be explicit.
    assert "SameSite" not in cookie
    assert "Secure" not in cookie
    assert "Expires" not in cookie  # a browser-session cookie unless session.permanent


def test_flask_cookie_settings_are_honoured(redis_client, client_factory):
    app = make_app(
        client_factory(),
        config={
            "SESSION_COOKIE_SECURE": True,
            "SESSION_COOKIE_SAMESITE": "Strict",
            "SESSION_COOKIE_NAME": "shop_sid",
            "SESSION_COOKIE_PATH": "/shop",
        },
    )
    cookie = app.test_client().post("/set/a/1").headers["Set-Cookie"]
    assert cookie.startswith("shop_sid=")
    assert "Secure" in cookie and "SameSite=Strict" in cookie and "Path=/shop" in cookie


def test_cookie_name_option_overrides_flask_setting(redis_client, client_factory):
    app = make_app(client_factory(), cookie_name="sid")
    assert app.test_client().post("/set/a/1").headers["Set-Cookie"].startswith("sid=")


# init_app and URLs -----------------------------------------------------------


def test_init_app_configures_from_app_config(redis_server, redis_client):
    app = Flask("configured")
    app.secret_key = SECRET
    app.config.update(
        SESSION_REDIS_URL=redis_server.url,
        SESSION_IDLE_TIMEOUT=120,
        SESSION_ABSOLUTE_TIMEOUT=timedelta(hours=1),
    )
    interface = sessionstore.init_app(app)
    assert app.session_interface is interface
    assert interface.store.idle_timeout == timedelta(seconds=120)

    @app.post("/set")
    def set_value():
        session["a"] = 1
        return "ok"

    app.test_client().post("/set")
    (key,) = session_keys(redis_client)
    assert 0 < redis_client.pttl(key) <= 120_000


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://127.0.0.1:26379/shop", ([("127.0.0.1", 26379)], "shop", 0, None)),
        (
            "redis+sentinel://:pw@h1:1,h2:2,h3:3/mymaster/2",
            ([("h1", 1), ("h2", 2), ("h3", 3)], "mymaster", 2, "pw"),
        ),
    ],
)
def test_sentinel_urls_are_parsed(url, expected):
    assert sessionstore.parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    "url", ["redis+sentinel://127.0.0.1:26379", "redis+sentinel://host/shop", "redis://h/0"]
)
def test_bad_sentinel_urls_are_rejected_with_a_clear_message(url):
    with pytest.raises(ValueError, match="sentinel|host:port"):
        sessionstore.parse_sentinel_url(url)


def test_sessions_through_a_real_sentinel(redis_server, redis_client, tmp_path):
    proc, port = start_sentinel(tmp_path, redis_server.port)
    try:
        app = make_app(redis_from_url(f"redis+sentinel://127.0.0.1:{port}/shop"))
        client = app.test_client()
        client.post("/set/a/via-sentinel")
        assert client.get("/read").json == {"a": "via-sentinel"}
        assert len(session_keys(redis_client)) == 1
    finally:
        procs.stop_process(proc.pid)


# The usual choice, side by side ------------------------------------------------
# Flask-Session 0.8 with its Redis backend runs the same scenarios. These tests
# pin down the failures the README claims for it; if a new release fixes one,
# the test says so and the README's comparison must be updated.


@pytest.mark.parametrize("peer", [False, True], ids=["sessionstore", "flask_session"])
def test_concurrent_update_survives_only_with_sessionstore(redis_client, client_factory, peer):
    one, two, sid = two_replicas_sharing_a_session(client_factory, "/set/seed/1", peer=peer)
    run_slow_write_racing(one, two, sid, "/set/b/from-two")
    survived = with_cookie(two, sid).get("/read").json
    assert ("b" in survived) is not peer  # Flask-Session rewrites the whole session


@pytest.mark.parametrize("peer", [False, True], ids=["sessionstore", "flask_session"])
def test_logout_stays_logged_out_only_with_sessionstore(redis_client, client_factory, peer):
    one, two, sid = two_replicas_sharing_a_session(client_factory, "/set/user_id/alice", peer=peer)
    run_slow_write_racing(one, two, sid, "/logout")
    # Nothing of the session may be written back, not even the one key the slow
    # request changed: the peer rewrites the whole session, sessionstore nothing.
    assert bool(list(redis_client.scan_iter("*"))) is peer
    resurrected = with_cookie(two, sid).get("/read").json
    assert (resurrected.get("user_id") == "alice") is peer  # the peer brings the login back


@pytest.mark.parametrize("peer", [False, True], ids=["sessionstore", "flask_session"])
def test_only_sessionstore_keeps_the_cookie_out_of_redis(redis_client, client_factory, peer):
    app = make_app(client_factory(), peer=peer)
    client = app.test_client()
    client.post("/set/a/1")
    sid = cookie_of(client)
    assert any(sid in key for key in redis_client.scan_iter("*")) is peer


# Durability with replicas (Sentinel setups) ---------------------------------------


# `primary_with_replica` lives in conftest.py (the shop's WAIT tests use it too).


def test_write_is_acknowledged_only_once_a_replica_has_it(primary_with_replica):
    primary, replica = primary_with_replica
    app = make_app(
        redis_from_url(primary.url, retries=0),
        durability=Durability(replica_acks=1, timeout=timedelta(milliseconds=300)),
    )
    client = app.test_client()
    assert client.post("/login/alice").status_code == 200
    assert client.get("/read").json == {"user_id": "alice"}

    procs.stop_process(replica.pid, timeout=0)  # no replica left to acknowledge (crashed)
    started = time.monotonic()
    response = client.post("/set/cart/full")
    assert response.status_code == 503  # not acknowledged: the app says so
    assert time.monotonic() - started < 2  # bounded by the ack timeout, not a hang


def test_a_primary_refusing_writes_still_serves_sessions_and_changes_none(guarded_primary):
    """The launcher's HA nodes refuse writes without a replica in sync
    (min-replicas-to-write): a save is a StoreUnavailable that wrote nothing,
    and a read is served even when it would push the idle TTL back."""
    app = make_app(
        redis_from_url(guarded_primary.url, retries=0),
        durability=Durability(replica_acks=1),
        idle_timeout=timedelta(seconds=60),
    )
    client = app.test_client()
    assert client.post("/login/alice").status_code == 200
    assert client.post("/set/cart/one").status_code == 200
    with guarded_primary.server.client(decode_responses=True) as raw:
        (key,) = session_keys(raw)
        raw.pexpire(key, 20_000)  # less than half the idle timeout left: a read pushes it
        guarded_primary.lose_the_replica()

        assert client.get("/read").json == {"user_id": "alice", "cart": "one"}
        assert raw.pttl(key) <= 20_000  # the push was skipped, not failed
        assert client.post("/set/cart/two").status_code == 503
        assert client.post("/logout").status_code == 503
        assert client.get("/read").json == {"user_id": "alice", "cart": "one"}


def test_durable_save_is_still_one_round_trip(primary_with_replica, tmp_path):
    primary, _ = primary_with_replica
    pool = redis.ConnectionPool(
        host=procs.LOOPBACK, port=primary.port, connection_class=CountingConnection
    )
    app = make_app(redis.Redis(connection_pool=pool), durability=Durability(replica_acks=1))
    client = app.test_client()
    client.post("/set/a/1")
    client.post("/set/a/2")  # scripts are loaded by now
    CountingConnection.sends = 0
    client.post("/set/a/3")
    assert CountingConnection.sends == 2  # one load, one pipelined save + WAIT


@pytest.mark.parametrize(
    "value",
    [
        {"plain": [1, 2.5, "x", None, True]},
        'say "hi" now',
        {" t": "a key that looks like a tag"},
        (1, ("nested", b"bytes")),
        [Markup("<i>x</i>"), uuid.UUID(int=7)],
    ],
)
def test_serializer_fast_path_agrees_with_flask_tagged_json(value):
    from flask.json.tag import TaggedJSONSerializer

    from sessionstore import serializer

    raw = serializer.dumps(value)
    assert serializer.loads(raw) == TaggedJSONSerializer().loads(raw) == value
    assert type(serializer.loads(raw)) is type(value)
