"""sessionstore keeps Flask's session contract, against a real redis-server.

Each test states one thing Flask's own cookie session does (or one deliberate
difference, named as such) and checks that `RedisSessionInterface` does the
same. sessionstore/README.md ("Flask's session contract") lists them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import redis
from flask import Flask, Response, flash, get_flashed_messages, jsonify, request, session
from flask.globals import request_ctx
from sessionstore_support import COOKIE, CountingConnection, cookie_of, session_keys
from werkzeug.http import parse_date

from sessionstore import RedisSessionInterface, SessionObserver
from shop.cluster import procs

SECRET = "contract-secret"


@pytest.fixture
def store_client(redis_server, redis_client):
    """A client for sessionstore on the emptied test Redis, counting round trips."""
    pool = redis.ConnectionPool(
        host=procs.LOOPBACK, port=redis_server.port, connection_class=CountingConnection
    )
    client = redis.Redis(connection_pool=pool)
    yield client
    client.close()


def make_app(store_client: redis.Redis, *, secret: str | None = SECRET, **config) -> Flask:
    """An app whose views use the session the way Flask's documentation does."""
    app = Flask("contract")
    app.config.update(TESTING=True, SECRET_KEY=secret, **config)
    app.session_interface = RedisSessionInterface(store_client)

    @app.get("/read")
    def read():
        return jsonify(dict(session))

    @app.get("/get/<key>")
    def get(key):
        return jsonify(session.get(key))

    @app.get("/nothing")
    def nothing():
        return "the session is not touched"

    @app.post("/set/<key>/<value>")
    def set_value(key, value):
        session[key] = value
        return "ok"

    @app.post("/pop/<key>")
    def pop(key):
        session.pop(key, None)
        return "ok"

    @app.post("/clear")
    def clear():
        session.clear()
        return "ok"

    @app.post("/permanent/<int:on>")
    def permanent(on):
        session["user_id"] = "alice"
        session.permanent = bool(on)
        return "ok"

    @app.post("/regenerate")
    def regenerate():
        session.regenerate()
        return "ok"

    @app.post("/destroy")
    def destroy():
        session.destroy()
        return "ok"

    return app


def the_session_key(r: redis.Redis) -> str:
    (key,) = session_keys(r)
    return key


def last_session(client):
    """The session object of the request `client` just made (inside ``with client:``),
    read without going through the `flask.session` proxy, which would mark it accessed."""
    return request_ctx._session


# -- no SECRET_KEY: a null session, as in Flask ----------------------------------


def test_without_a_secret_key_requests_that_only_read_the_session_work(store_client, redis_client):
    client = make_app(store_client, secret=None).test_client()
    assert client.get("/nothing").status_code == 200
    assert client.get("/read").json == {}
    assert client.get("/get/x").json is None
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("path", ["/set/a/1", "/pop/a", "/clear", "/regenerate", "/destroy"])
def test_without_a_secret_key_writing_the_session_raises_flasks_error(store_client, path):
    client = make_app(store_client, secret=None).test_client()
    with pytest.raises(RuntimeError, match="session is unavailable because no secret key"):
        client.post(path)


def test_without_a_secret_key_session_transaction_refuses_like_flask(store_client):
    client = make_app(store_client, secret=None).test_client()
    with (
        pytest.raises(RuntimeError, match="did not open a session"),
        client.session_transaction(),
    ):
        pass


# -- modified, accessed, new, permanent ---------------------------------------------


def test_untouched_session_is_neither_accessed_nor_modified(store_client):
    app = make_app(store_client)
    client = app.test_client()
    client.post("/set/a/1")
    with client:
        client.get("/nothing")
        assert not last_session(client).accessed
        assert not last_session(client).modified


def test_read_session_is_accessed_not_modified_and_not_new(store_client):
    app = make_app(store_client)
    client = app.test_client()
    client.post("/set/a/1")
    with client:
        client.get("/read")
        assert last_session(client).accessed
        assert not last_session(client).modified
        assert not last_session(client).new


def test_written_session_is_modified(store_client):
    client = make_app(store_client).test_client()
    with client:
        client.post("/set/a/1")
        assert last_session(client).modified


@pytest.mark.parametrize("path", ["/pop/a", "/clear"])
def test_removing_keys_marks_the_session_modified(store_client, path):
    client = make_app(store_client).test_client()
    client.post("/set/a/1")
    with client:
        client.post(path)
        assert last_session(client).modified


def test_a_visitor_without_a_stored_session_has_a_new_one(store_client):
    client = make_app(store_client).test_client()
    with client:
        client.get("/read")
        assert last_session(client).new
    client.post("/set/a/1")
    with client:
        client.get("/read")
        assert not last_session(client).new


def test_flash_marks_the_session_modified_each_time(store_client):
    app = make_app(store_client)
    with app.test_request_context():
        assert not session.modified
        flash("saved")
        assert session.modified
        session.modified = False
        flash("saved again")
        assert session.modified
        assert get_flashed_messages() == ["saved", "saved again"]


def test_permanent_is_false_by_default_and_kept_once_set(store_client):
    app = make_app(store_client)

    @app.get("/is-permanent")
    def is_permanent():
        return jsonify(session.permanent)

    client = app.test_client()
    client.post("/set/a/1")
    assert client.get("/is-permanent").json is False
    client.post("/permanent/1")
    assert client.get("/is-permanent").json is True
    client.post("/permanent/0")
    assert client.get("/is-permanent").json is False


def test_a_write_made_after_the_view_is_saved_too(store_client):
    app = make_app(store_client)

    @app.after_request
    def stamp(response):
        session["stamped"] = "yes"
        return response

    client = app.test_client()
    client.get("/nothing")
    assert client.get("/get/stamped").json == "yes"


def test_an_emptied_session_leaves_redis_and_loses_its_cookie(store_client, redis_client):
    client = make_app(store_client).test_client()
    client.post("/set/a/1")
    client.post("/set/b/2")
    client.post("/pop/a")
    assert len(session_keys(redis_client)) == 1
    response = client.post("/pop/b")
    assert f"{COOKIE}=;" in response.headers["Set-Cookie"]
    assert cookie_of(client) is None
    assert redis_client.dbsize() == 0  # the index of no user, and no empty hash


def test_an_emptied_session_is_reported_as_ended_like_a_destroyed_one(store_client):
    class Ends(SessionObserver):
        ended = 0

        def sessions_ended(self, count: int) -> None:
            type(self).ended += count

    app = make_app(store_client)
    app.session_interface = RedisSessionInterface(store_client, observer=Ends())
    client = app.test_client()
    client.post("/set/a/1")
    client.post("/clear")
    client.post("/set/a/1")
    client.post("/destroy")
    assert Ends.ended == 2


# -- Vary: Cookie --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/read", "/get/a", "/set/a/2", "/pop/a", "/clear"])
def test_a_response_that_used_the_session_varies_on_cookie_once(store_client, path):
    client = make_app(store_client).test_client()
    client.post("/set/a/1")
    response = client.open(path, method="GET" if path.startswith(("/read", "/get")) else "POST")
    assert response.headers.getlist("Vary") == ["Cookie"]


def test_vary_cookie_joins_the_views_own_vary_values(store_client):
    app = make_app(store_client)

    @app.get("/negotiated")
    def negotiated():
        response = Response("hi")
        response.vary.update(("Accept-Encoding", "Accept-Language"))
        session["seen"] = "yes"
        return response

    response = app.test_client().get("/negotiated")
    assert response.headers.getlist("Vary") == ["Accept-Encoding, Accept-Language, Cookie"]


def test_a_response_that_never_used_the_session_does_not_vary(store_client):
    client = make_app(store_client).test_client()
    client.post("/set/a/1")
    assert "Vary" not in client.get("/nothing").headers


def test_deliberate_difference_an_untouched_request_does_not_refresh_a_permanent_session(
    store_client,
):
    # Flask reloads its cookie session on every request, so it re-sends the
    # cookie of a permanent session (with Vary: Cookie) even from a view that
    # never used it. sessionstore loads lazily: such a request makes no Redis
    # call, so health checks and static files keep working while Redis is down.
    client = make_app(store_client).test_client()
    client.post("/permanent/1")
    CountingConnection.sends = 0
    response = client.get("/nothing")
    assert CountingConnection.sends == 0
    assert "Set-Cookie" not in response.headers and "Vary" not in response.headers


# -- cookie settings -------------------------------------------------------------


def test_each_session_cookie_setting_is_honoured_when_set_and_when_cleared(store_client):
    app = make_app(
        store_client,
        SESSION_COOKIE_NAME="shop_session",
        SESSION_COOKIE_DOMAIN=".example.com",
        SESSION_COOKIE_PATH="/shop",
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PARTITIONED=True,
    )
    client = app.test_client()
    for path in ("/set/a/1", "/pop/a"):  # set, then cleared (emptied)
        # The app is mounted at /shop, so the client sends the cookie back.
        response = client.post(path, base_url="https://www.example.com/shop")
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("shop_session=")
        assert "Domain=example.com" in cookie or "Domain=.example.com" in cookie
        assert "Path=/shop" in cookie
        assert "HttpOnly" not in cookie
        assert "Secure" in cookie
        assert "SameSite=Strict" in cookie
        assert "Partitioned" in cookie


def test_cookie_path_falls_back_to_application_root(store_client):
    app = make_app(store_client, APPLICATION_ROOT="/app")
    cookie = app.test_client().post("/set/a/1").headers["Set-Cookie"]
    assert "Path=/app" in cookie


@pytest.mark.parametrize(
    ("samesite", "expected"), [(None, None), ("Lax", "Lax"), ("Strict", "Strict")]
)
def test_samesite_follows_the_setting_none_meaning_no_attribute(store_client, samesite, expected):
    app = make_app(store_client, SESSION_COOKIE_SAMESITE=samesite)
    cookie = app.test_client().post("/set/a/1").headers["Set-Cookie"]
    found = re.search(r"SameSite=(\w+)", cookie)
    assert (found.group(1) if found else None) == expected


def test_an_invalid_samesite_value_is_refused_as_flask_refuses_it(store_client):
    app = make_app(store_client, SESSION_COOKIE_SAMESITE="sometimes")
    with pytest.raises(ValueError):
        app.test_client().post("/set/a/1")


def test_cookie_name_can_depend_on_the_request(store_client):
    class PerAreaCookie(RedisSessionInterface):
        def get_cookie_name(self, app):
            return "admin_session" if request.path.startswith("/admin") else "session"

    app = make_app(store_client)
    app.session_interface = PerAreaCookie(store_client)

    @app.post("/admin/set/<key>/<value>")
    def admin_set(key, value):
        session[key] = value
        return "ok"

    @app.get("/admin/read")
    def admin_read():
        return jsonify(dict(session))

    client = app.test_client()
    client.post("/set/area/shop")
    client.post("/admin/set/area/admin")
    assert client.get_cookie("session").value != client.get_cookie("admin_session").value
    assert client.get("/read").json == {"area": "shop"}
    assert client.get("/admin/read").json == {"area": "admin"}


# -- permanent sessions and Flask's lifetime settings ---------------------------


def expires_of(response) -> datetime | None:
    found = re.search(r"Expires=([^;]+)", response.headers["Set-Cookie"])
    return parse_date(found.group(1)) if found else None


def test_permanent_cookie_expires_after_permanent_session_lifetime(store_client):
    app = make_app(store_client, PERMANENT_SESSION_LIFETIME=timedelta(days=7))
    response = app.test_client().post("/permanent/1")
    expected = datetime.now(UTC) + timedelta(days=7)
    assert abs((expires_of(response) - expected).total_seconds()) < 60


def test_making_a_session_not_permanent_again_sends_a_browser_session_cookie(store_client):
    client = make_app(store_client).test_client()
    client.post("/permanent/1")
    response = client.post("/permanent/0")
    assert "Set-Cookie" in response.headers
    assert expires_of(response) is None


@pytest.mark.parametrize(
    ("permanent", "refresh_each_request", "cookie_on_read"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_reads_resend_the_cookie_only_of_permanent_sessions_with_refresh_each_request(
    store_client, permanent, refresh_each_request, cookie_on_read
):
    app = make_app(store_client, SESSION_REFRESH_EACH_REQUEST=refresh_each_request)
    client = app.test_client()
    client.post(f"/permanent/{int(permanent)}")
    response = client.get("/read")
    assert ("Set-Cookie" in response.headers) is cookie_on_read
    assert response.json["user_id"] == "alice"


def test_a_permanent_session_lives_for_permanent_session_lifetime_in_redis(
    store_client, redis_client
):
    app = make_app(store_client, PERMANENT_SESSION_LIFETIME=timedelta(hours=2))
    app.session_interface = RedisSessionInterface(
        store_client, idle_timeout=timedelta(minutes=5), absolute_timeout=timedelta(hours=10)
    )
    client = app.test_client()
    client.post("/permanent/0")
    key = the_session_key(redis_client)
    assert redis_client.pttl(key) <= 5 * 60_000  # not permanent: the idle timeout
    client.post("/permanent/1")
    assert redis_client.pttl(key) > 60 * 60_000  # permanent: Flask's lifetime
    client.post("/permanent/0")
    assert redis_client.pttl(key) <= 5 * 60_000


def test_the_absolute_timeout_still_caps_a_permanent_session(store_client, redis_client):
    app = make_app(store_client, PERMANENT_SESSION_LIFETIME=timedelta(days=31))
    app.session_interface = RedisSessionInterface(store_client, absolute_timeout=timedelta(hours=1))
    app.test_client().post("/permanent/1")
    assert redis_client.pttl(the_session_key(redis_client)) <= 3600_000


@pytest.mark.parametrize("refresh_each_request", [True, False])
def test_reading_a_permanent_session_pushes_its_expiry_back_only_with_refresh_each_request(
    store_client, redis_client, refresh_each_request
):
    lifetime_ms = 1000
    app = make_app(
        store_client,
        PERMANENT_SESSION_LIFETIME=timedelta(milliseconds=lifetime_ms),
        SESSION_REFRESH_EACH_REQUEST=refresh_each_request,
    )
    client = app.test_client()
    client.post("/permanent/1")
    key = the_session_key(redis_client)
    # Reads push the expiry back once less than half the lifetime is left.
    procs.wait_until(
        lambda: 0 < redis_client.pttl(key) < lifetime_ms / 2 - 100, timeout=5, what="half-life"
    )
    assert client.get("/read").json["user_id"] == "alice"
    assert (redis_client.pttl(key) > lifetime_ms / 2) is refresh_each_request


# -- key rotation (SECRET_KEY_FALLBACKS) --------------------------------------------


def rotate(app: Flask, new_secret: str) -> None:
    app.config["SECRET_KEY_FALLBACKS"] = [app.secret_key]
    app.secret_key = new_secret


def test_after_a_key_rotation_a_session_stays_logged_in(store_client):
    app = make_app(store_client)
    client = app.test_client()
    client.post("/set/user_id/alice")
    rotate(app, "the-new-secret")
    assert client.get("/read").json == {"user_id": "alice"}


def test_a_rotated_session_moves_to_the_new_keys_derivation_when_next_used(
    store_client, redis_client
):
    app = make_app(store_client)
    client = app.test_client()
    client.post("/set/user_id/alice")
    old_key = the_session_key(redis_client)
    rotate(app, "the-new-secret")
    client.get("/read")
    new_key = the_session_key(redis_client)
    assert new_key != old_key
    assert redis_client.zrange("sess:user:alice", 0, -1) == [new_key]
    # The old secret is no longer needed for this session.
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert client.get("/read").json == {"user_id": "alice"}
    with app.app_context():
        assert app.session_interface.store.revoke_user("alice") == 1
    assert client.get("/read").json == {}


def test_rotation_costs_nothing_to_a_request_under_the_current_key(store_client):
    app = make_app(store_client)
    client = app.test_client()
    client.post("/set/a/1")
    rotate(app, "the-new-secret")
    client.get("/read")  # moved to the new key
    CountingConnection.sends = 0
    response = client.get("/read")
    assert response.json == {"a": "1"}
    assert CountingConnection.sends == 1


def test_a_session_under_an_old_secret_costs_one_extra_round_trip_once(store_client):
    app = make_app(store_client)
    client, other = app.test_client(), app.test_client()
    client.post("/set/a/1")
    other.post("/set/b/2")
    rotate(app, "the-new-secret")
    assert other.get("/read").json == {"b": "2"}  # Redis has the load script by now
    CountingConnection.sends = 0
    assert client.get("/read").json == {"a": "1"}  # found under the old key, moved
    assert CountingConnection.sends == 2
    CountingConnection.sends = 0
    assert client.get("/read").json == {"a": "1"}
    assert CountingConnection.sends == 1


def test_logout_during_a_rotation_reaches_a_session_not_moved_yet(store_client, redis_client):
    app = make_app(store_client)
    client = app.test_client()
    client.post("/set/user_id/alice")
    sid = cookie_of(client)
    rotate(app, "the-new-secret")
    client.post("/destroy")  # destroys without reading first
    assert redis_client.dbsize() == 0
    app.secret_key, app.config["SECRET_KEY_FALLBACKS"] = SECRET, []  # even under the old key
    replay = app.test_client()
    replay.set_cookie(COOKIE, sid)
    assert replay.get("/read").json == {}


def test_a_secret_that_knows_nothing_of_a_session_leaves_its_cookie_alone(store_client):
    # As with Flask: a wrong SECRET_KEY deployed by mistake and rolled back
    # again does not log out everyone who visited in between.
    app = make_app(store_client)
    client = app.test_client()
    client.post("/set/user_id/alice")
    app.secret_key = "a-mistake"
    response = client.get("/read")
    assert response.json == {}
    assert "Set-Cookie" not in response.headers
    app.secret_key = SECRET
    assert client.get("/read").json == {"user_id": "alice"}


# -- the test client's session_transaction ----------------------------------------


def test_session_transaction_writes_what_the_app_then_reads(store_client):
    client = make_app(store_client).test_client()
    with client.session_transaction() as sess:
        assert len(sess) == 0
        sess["cart"] = ["house-blend"]
    assert client.get("/read").json == {"cart": ["house-blend"]}


def test_session_transaction_reads_what_the_app_wrote_and_changes_it(store_client):
    client = make_app(store_client).test_client()
    client.post("/set/a/1")
    with client.session_transaction() as sess:
        assert dict(sess) == {"a": "1"}
        sess["b"] = "2"
        del sess["a"]
    assert client.get("/read").json == {"b": "2"}


def test_session_transaction_needs_a_client_that_keeps_cookies(store_client):
    client = make_app(store_client).test_client(use_cookies=False)
    with pytest.raises(TypeError, match="Cookies are disabled"), client.session_transaction():
        pass


# -- a permanent session's cookie slides forward ----------------------------------


def test_a_permanent_sessions_refreshed_cookie_expiry_moves_forward(store_client):
    app = make_app(store_client, PERMANENT_SESSION_LIFETIME=timedelta(seconds=30))
    client = app.test_client()
    first = expires_of(client.post("/permanent/1"))
    # Cookie dates have a resolution of one second: wait until the next one.
    procs.wait_until(
        lambda: datetime.now(UTC) + timedelta(seconds=30) >= first + timedelta(seconds=1),
        timeout=3,
        what="the next second",
    )
    assert expires_of(client.get("/read")) > first


def test_a_new_session_id_reaches_the_browser_even_when_nothing_else_changed(store_client):
    client = make_app(store_client).test_client()
    client.post("/set/a/1")
    before = cookie_of(client)
    with client:
        client.post("/regenerate")
        assert not last_session(client).modified
    assert cookie_of(client) not in (None, before)
    assert client.get("/read").json == {"a": "1"}
