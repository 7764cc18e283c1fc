"""sessionstore under the extensions Flask apps use with sessions: Flask-Login and
Flask-WTF's CSRF protection, unmodified, against a real redis-server.

Two app instances on one Redis stand in for two replicas: a login made on one
is a login on the other.
"""

from __future__ import annotations

import pytest
import redis
from flask import Flask, jsonify, request, session
from flask_login import (
    LoginManager,
    UserMixin,
    confirm_login,
    current_user,
    fresh_login_required,
    login_fresh,
    login_required,
    login_user,
    logout_user,
)
from flask_wtf.csrf import CSRFProtect, generate_csrf
from sessionstore_support import session_keys

from sessionstore import RedisSessionInterface

SECRET = "extensions-secret"
PASSWORDS = {"alice": "wonderland", "bob": "builder"}
BROWSER = "Mozilla/5.0 (test browser)"


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def make_app(client: redis.Redis, name: str = "replica", **config) -> Flask:
    """An app that logs users in the way Flask-Login's documentation does, with
    sessionstore's `regenerate()` on login and `destroy()` on logout."""
    app = Flask(name)
    app.config.update(SECRET_KEY=SECRET, **config)  # Flask-Login's "basic" protection by default
    # Flask-Login keeps the user id under "_user_id": index sessions by it, so
    # revoke_user() works for Flask-Login users.
    app.session_interface = RedisSessionInterface(client, user_key="_user_id")
    CSRFProtect(app)
    logins = LoginManager(app)

    @logins.user_loader
    def load_user(user_id):
        return User(user_id) if user_id in PASSWORDS else None

    @app.get("/csrf-token")
    def csrf_token():
        return jsonify(generate_csrf())

    @app.post("/login")
    def login():
        username = request.form["username"]
        if PASSWORDS.get(username) != request.form["password"]:
            return "bad credentials", 401
        session.regenerate()  # a new id on login: a planted id is worthless
        login_user(User(username), remember=request.form.get("remember") == "yes")
        return "welcome"

    @app.post("/logout")
    def logout():
        # destroy() first: logout_user() then marks the remember-me cookie for
        # clearing in the fresh, empty session, and Flask-Login clears it.
        session.destroy()
        logout_user()
        return "bye"

    @app.get("/me")
    def me():
        return jsonify(user=current_user.get_id(), fresh=login_fresh())

    @app.get("/private")
    @login_required
    def private():
        return "for members"

    @app.post("/change-password")
    @fresh_login_required
    def change_password():
        return "changed"

    @app.post("/reauthenticate")
    @login_required
    def reauthenticate():
        if PASSWORDS[current_user.id] != request.form["password"]:
            return "bad credentials", 401
        confirm_login()
        return "fresh again"

    @app.post("/note/<text>")
    def note(text):
        session["note"] = text
        return "noted"

    return app


@pytest.fixture
def store_client(redis_server, redis_client):
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def app(store_client) -> Flask:
    return make_app(store_client)


def browser(app: Flask):
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = BROWSER
    return client


def log_in(client, username: str = "alice", *, remember: bool = False):
    token = client.get("/csrf-token").json
    form = {"username": username, "password": PASSWORDS[username], "csrf_token": token}
    if remember:
        form["remember"] = "yes"
    response = client.post("/login", data=form)
    assert response.status_code == 200, response.text
    return token


def same_browser_on(app: Flask, client):
    """A client for `app` (another replica) holding `client`'s cookies."""
    other = browser(app)
    for cookie in client._cookies.values():
        other.set_cookie(cookie.key, cookie.value, domain=cookie.domain, path=cookie.path)
    return other


# -- login and logout -----------------------------------------------------------


def test_login_holds_on_every_replica(store_client):
    one, two = make_app(store_client, "one"), make_app(store_client, "two")
    client = browser(one)
    assert client.get("/private").status_code == 401
    log_in(client)
    assert client.get("/private").status_code == 200
    assert same_browser_on(two, client).get("/me").json == {"user": "alice", "fresh": True}


def test_login_gives_a_new_session_id_and_the_old_one_is_worthless(app):
    client = browser(app)
    client.post("/note/before-login", data={"csrf_token": client.get("/csrf-token").json})
    planted = client.get_cookie("session").value
    log_in(client)
    assert client.get_cookie("session").value != planted
    replay = browser(app)
    replay.set_cookie("session", planted)
    assert replay.get("/me").json["user"] is None


def test_logout_ends_the_session_in_redis(app, redis_client):
    client = browser(app)
    token = log_in(client)
    stolen = client.get_cookie("session").value
    client.post("/logout", data={"csrf_token": token})
    assert client.get("/me").json["user"] is None
    assert session_keys(redis_client) == []
    replay = browser(app)
    replay.set_cookie("session", stolen)
    assert replay.get("/private").status_code == 401


def test_revoke_user_logs_a_flask_login_user_out_everywhere(app):
    laptop, phone = browser(app), browser(app)
    log_in(laptop)
    log_in(phone)
    with app.app_context():
        assert app.session_interface.store.revoke_user("alice") == 2
    assert laptop.get("/private").status_code == 401
    assert phone.get("/private").status_code == 401


# -- remember me -----------------------------------------------------------------


def test_remember_me_logs_the_user_back_in_once_the_session_is_gone(app, redis_client):
    client = browser(app)
    log_in(client, remember=True)
    assert client.get_cookie("remember_token") is not None
    redis_client.flushdb()  # the session ended (idle timeout, a Redis wipe...)

    assert client.get("/me").json == {"user": "alice", "fresh": False}
    assert len(session_keys(redis_client)) == 1  # the restored login is a session again


def test_logout_forgets_the_remember_me_cookie_too(app):
    client = browser(app)
    token = log_in(client, remember=True)
    client.post("/logout", data={"csrf_token": token})
    assert client.get_cookie("remember_token") is None
    assert client.get("/me").json["user"] is None


# -- session protection "strong" --------------------------------------------------


def test_strong_session_protection_logs_out_a_session_used_from_another_browser(
    store_client, redis_client
):
    client = browser(make_app(store_client, SESSION_PROTECTION="strong"))
    log_in(client)
    client.environ_base["HTTP_USER_AGENT"] = "a different browser"
    assert client.get("/me").json["user"] is None
    # The login is gone from Redis too, not only from this response.
    assert not any(redis_client.hexists(key, "_user_id") for key in session_keys(redis_client))
    client.environ_base["HTTP_USER_AGENT"] = BROWSER
    assert client.get("/me").json["user"] is None


# -- fresh logins ------------------------------------------------------------------


def test_a_login_restored_from_remember_me_is_not_fresh_until_confirmed(app, redis_client):
    client = browser(app)
    token = log_in(client, remember=True)
    assert client.post("/change-password", data={"csrf_token": token}).status_code == 200
    redis_client.flushdb()

    token = client.get("/csrf-token").json  # the old session, and its token, are gone
    assert client.post("/change-password", data={"csrf_token": token}).status_code == 401
    form = {"csrf_token": token, "password": PASSWORDS["alice"]}
    assert client.post("/reauthenticate", data=form).status_code == 200
    assert client.post("/change-password", data={"csrf_token": token}).status_code == 200
    assert client.get("/me").json == {"user": "alice", "fresh": True}


# -- CSRF (Flask-WTF) across a login -------------------------------------------------


def test_csrf_token_survives_the_login_regeneration(app):
    client = browser(app)
    token = log_in(client)  # the token was issued before login
    assert client.post("/note/after-login", data={"csrf_token": token}).status_code == 200


def test_csrf_token_is_checked_on_every_replica(store_client):
    one, two = make_app(store_client, "one"), make_app(store_client, "two")
    client = browser(one)
    token = log_in(client)
    other = same_browser_on(two, client)
    assert other.post("/note/on-two", data={"csrf_token": token}).status_code == 200
    assert other.post("/note/forged", data={"csrf_token": "forged"}).status_code == 400
    assert other.post("/note/missing").status_code == 400


def test_csrf_token_dies_with_the_session_at_logout(app):
    client = browser(app)
    token = log_in(client)
    client.post("/logout", data={"csrf_token": token})
    assert client.post("/note/after-logout", data={"csrf_token": token}).status_code == 400
