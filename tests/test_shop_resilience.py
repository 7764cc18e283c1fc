"""Redis going away and coming back; the app served by a real gunicorn process."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from flask import session
from shop_support import PASSWORD, login, make_app, register

from shop.cluster import procs

ROOT = Path(__file__).resolve().parent.parent


def test_redis_down_gives_503_and_service_resumes_when_it_is_back(own_redis):
    app = make_app(own_redis.url)
    api, browser = app.test_client(), app.test_client()
    register(api, "resilient")
    login(api, "resilient")
    assert api.post("/api/cart/items", json={"product_id": "scale", "qty": 1}).status_code == 201

    own_redis.stop()
    try:
        for method, path, kwargs in [
            ("GET", "/api/products", {}),
            ("GET", "/api/me", {}),
            ("POST", "/api/cart/items", {"json": {"product_id": "scale", "qty": 1}}),
            ("POST", "/api/checkout", {}),
        ]:
            response = api.open(path, method=method, **kwargs)
            assert response.status_code == 503, path
            assert response.get_json()["error"] == "store_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
            assert response.headers["X-Served-By"] == "replica-a"

        page = browser.get("/")
        text = page.get_data(as_text=True)
        assert page.status_code == 503 and "<h1>Back in a moment</h1>" in text
        assert "Traceback" not in text and 'id="served-by"' in text
        assert "Retry-After" in page.headers

        assert api.get("/healthz").status_code == 200
        assert api.get("/readyz").status_code == 503
    finally:
        own_redis.start()

    # no app restart: the same app object serves again, and the session survived (AOF)
    assert api.get("/readyz").status_code == 200
    assert api.get("/api/me").get_json() == {"username": "resilient"}
    assert api.post("/api/cart/items", json={"product_id": "scale", "qty": 1}).status_code == 201
    assert api.get("/api/cart").get_json()["items"][0]["qty"] == 2
    assert browser.get("/").status_code == 200


def test_redis_failing_while_the_session_is_saved_is_a_503_too(own_redis):
    # as in production: unhandled errors go to the 500 handler instead of the test
    app = make_app(own_redis.url, PROPAGATE_EXCEPTIONS=False)

    @app.get("/test/write-after-outage")
    def write_after_outage():
        session.get("anything")  # loaded while Redis is up
        own_redis.stop()  # ... and gone before Flask saves the session
        session["written"] = True
        return "ok"

    try:
        response = app.test_client().get("/test/write-after-outage")
        assert response.status_code == 503
        assert "<h1>Back in a moment</h1>" in response.get_data(as_text=True)
    finally:
        own_redis.start()


def test_app_starting_while_redis_is_down_seeds_the_catalog_once_it_is_back(own_redis):
    own_redis.stop()
    try:
        app = make_app(own_redis.url)
        assert app.test_client().get("/api/products").status_code == 503
    finally:
        own_redis.start()
    assert len(app.test_client().get("/api/products").get_json()) >= 10


def test_real_gunicorn_serves_the_flow_and_logs_replica_and_request_id(gunicorn_replica):
    base, log_path = gunicorn_replica
    http = requests.Session()
    credentials = {"username": "guni", "password": PASSWORD}
    assert http.post(f"{base}/api/register", json=credentials, timeout=5).status_code == 201
    assert http.post(f"{base}/api/login", json=credentials, timeout=5).status_code == 200
    added = http.post(
        f"{base}/api/cart/items",
        json={"product_id": "scale", "qty": 1},
        headers={"X-Request-ID": "trace-abc-123", "Idempotency-Key": "once"},
        timeout=5,
    )
    assert added.status_code == 201 and added.headers["X-Served-By"] == "gunicorn-1"
    assert added.headers["X-Request-ID"] == "trace-abc-123"
    order = http.post(f"{base}/api/checkout", timeout=5)
    assert order.status_code == 201
    page = http.get(f"{base}/orders", timeout=5)
    assert "gunicorn-1" in page.text and f"Order #{order.json()['order_id']}" in page.text
    assert http.get(f"{base}/api/me", timeout=5).json() == {"username": "guni"}
    # keep-alive: the gthread worker does not close the connection after a response
    assert page.headers.get("Connection", "").lower() != "close"
    procs.wait_until(
        lambda: "trace-abc-123" in log_path.read_text(), timeout=10, what="the access log line"
    )
    line = next(x for x in log_path.read_text().splitlines() if "trace-abc-123" in x)
    record = json.loads(line)  # one JSON object per request (shop/logs.py)
    assert record["replica"] == "gunicorn-1" and record["status"] == 201
    assert (record["method"], record["path"]) == ("POST", "/api/cart/items")


def test_an_unexpected_error_is_a_500_without_a_traceback(redis_server, redis_client):
    app = make_app(redis_server.url, PROPAGATE_EXCEPTIONS=False)

    @app.get("/api/test-bug")
    def bug():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/api/test-bug")
    assert response.status_code == 500
    assert response.get_json()["error"] == "internal_error"
    assert "secret internals" not in response.get_data(as_text=True)
    assert response.headers["X-Served-By"] == "replica-a"
