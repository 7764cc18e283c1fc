"""Metrics, heartbeats, the cluster view and log hygiene, on real Redis and a real gunicorn.

The multiprocess test goes through gunicorn with two workers, because adding
up the workers' counters is what can go wrong; the rest use the Flask test
client and read the in-process registry. The cluster-wide checks (kill a
replica, logs after a shopping flow through nginx) are in
test_cluster_observability.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from shop_support import PASSWORD, login, make_app, register

from shop import heartbeat, keys, logs
from shop.cluster import procs

REPO = Path(__file__).resolve().parent.parent


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics text, parsed by prometheus_client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(name: str, **labels: str) -> float:
    """A sample of this process's registry (0 if never recorded)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- /metrics through a real gunicorn with 2 workers ----------------------------


def test_metrics_of_both_workers_add_up_and_move_with_traffic(gunicorn_replica, tmp_path):
    base, _ = gunicorn_replica
    requests_total = "shop_http_requests_total"
    products = frozenset({"endpoint": "api.products", "method": "GET", "status": "200"}.items())

    before = samples(requests.get(f"{base}/metrics", timeout=5).text)
    # A new connection per request, so both workers serve some of them.
    for _ in range(30):
        assert requests.get(f"{base}/api/products", timeout=5).status_code == 200

    def workers_beating() -> int:
        return requests.get(f"{base}/api/cluster", timeout=5).json()["replicas"][0]["workers"]

    with requests.Session() as http:
        credentials = {"username": "metered", "password": PASSWORD}
        assert http.post(f"{base}/api/register", json=credentials, timeout=5).status_code == 201
        assert http.post(f"{base}/api/login", json=credentials, timeout=5).status_code == 200
        add = {"product_id": "scale", "qty": 1}
        once = {"Idempotency-Key": "k-1"}
        for _ in range(2):  # the second is a replay
            reply = http.post(f"{base}/api/cart/items", json=add, headers=once, timeout=5)
            assert reply.status_code == 201
        assert http.post(f"{base}/api/checkout", timeout=5).status_code == 201
        assert http.post(f"{base}/api/logout", timeout=5).status_code == 204
    after = samples(requests.get(f"{base}/metrics", timeout=5).text)

    assert after[(requests_total, products)] - before.get((requests_total, products), 0) == 30
    # Written by two processes: both workers' files are summed by the scrape.
    metric_files = {p.name for p in (tmp_path / "metrics").glob("counter_*.db")}
    assert len(metric_files) == 2, metric_files
    # Both workers beat (the heartbeat is per worker, from its own thread, so
    # the second one's first beat may land a moment after its first request).
    procs.wait_until(lambda: workers_beating() == 2, timeout=10, what="both workers' heartbeats")

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("shop_cart_operations_total", operation="add", result="ok") == 1
    assert delta("shop_idempotent_replays_total", script="cart_add") == 1
    assert delta("shop_checkouts_total", result="ok") == 1
    assert delta("shop_sessions_created_total") >= 1
    assert delta("shop_sessions_destroyed_total") == 1
    assert delta("shop_http_request_duration_seconds_count", endpoint="api.products") == 30
    assert delta("shop_redis_command_duration_seconds_count", client="shop", command="EVALSHA") >= 3
    assert delta("shop_redis_command_duration_seconds_count", client="sessions", command="EVALSHA")
    assert ("shop_http_requests_in_progress", frozenset()) in after


# -- counters at their choke points (test client, in-process registry) ----------


def test_checkout_outcomes_replays_and_sessions_are_counted(shop_app, redis_client):
    client = shop_app.test_client()
    ok, short = (
        value("shop_checkouts_total", result="ok"),
        value("shop_checkouts_total", result="out_of_stock"),
    )
    created = value("shop_sessions_created_total")
    destroyed = value("shop_sessions_destroyed_total")
    register(client, "counted")
    login(client, "counted")
    assert value("shop_sessions_created_total") == created + 1
    client.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    assert client.post("/api/checkout").status_code == 201
    redis_client.hset(keys.stock(), "scale", 0)
    client.post("/api/cart/items", json={"product_id": "scale", "qty": 1})
    assert client.post("/api/checkout").status_code == 409
    assert value("shop_checkouts_total", result="ok") == ok + 1
    assert value("shop_checkouts_total", result="out_of_stock") == short + 1
    assert client.post("/api/logout").status_code == 204
    assert value("shop_sessions_destroyed_total") == destroyed + 1


def test_a_redis_outage_counts_503s_and_redis_errors(redis_server):
    app = make_app(f"redis://127.0.0.1:{procs.free_port()}/0")  # nothing listens there
    before = value("shop_store_unavailable_total")
    errors = value("shop_redis_errors_total", client="shop", error="ConnectionError")
    assert app.test_client().get("/api/products").status_code == 503
    assert value("shop_store_unavailable_total") == before + 1
    assert value("shop_redis_errors_total", client="shop", error="ConnectionError") > errors
    # /metrics itself needs no Redis: it still answers during the outage.
    assert app.test_client().get("/metrics").status_code == 200


# -- heartbeats and /api/cluster ------------------------------------------------


def test_api_cluster_aggregates_workers_per_replica_and_keeps_lapsed_ones_as_gone(
    shop_app, redis_client
):
    served = {"n": 0}
    a1 = heartbeat.Heartbeat(redis_client, "shop-1", lambda: served["n"], started=1000.0)
    a2 = heartbeat.Heartbeat(redis_client, "shop-1", lambda: 5, started=1000.0)
    a2.pid += 1  # a second worker of the same replica
    b = heartbeat.Heartbeat(redis_client, "shop-2", lambda: 7)
    served["n"] = 3
    for beat in (a1, a2, b):
        beat.beat()
    served["n"] = 4
    a1.beat()  # only the delta (1) goes into the bucket

    body = shop_app.test_client().get("/api/cluster").get_json()
    assert body["served_by"] == "replica-a"
    by_name = {r["name"]: r for r in body["replicas"]}
    assert by_name["shop-1"]["alive"] and by_name["shop-1"]["workers"] == 2
    assert by_name["shop-1"]["requests_total"] == 4 + 5
    assert by_name["shop-1"]["requests_last_minute"] == 4 + 5
    assert by_name["shop-1"]["uptime_seconds"] > 0
    assert by_name["shop-2"]["requests_total"] == 7
    assert [r["name"] for r in body["replicas"]] == ["shop-1", "shop-2"]
    # The store: one Redis, no replica, none needed (SHOP_REPLICA_ACKS=0).
    assert body["store"]["role"] == "primary" and body["store"]["replicas"] == []
    assert body["store"]["writes_need"] == 0 and body["store"]["writes_accepted"]

    # shop-2's worker key lapses (its TTL, cut short here): listed as gone, not dropped.
    assert 0 < redis_client.ttl(keys.cluster_worker("shop-2", b.pid)) <= heartbeat.TTL_SECONDS
    redis_client.delete(keys.cluster_worker("shop-2", b.pid))
    body = shop_app.test_client().get("/api/cluster").get_json()
    gone = next(r for r in body["replicas"] if r["name"] == "shop-2")
    assert gone["alive"] is False and gone["requests_total"] is None
    assert body["alive"] == 1 and body["replicas"][-1]["name"] == "shop-2"

    page = shop_app.test_client().get("/cluster")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'data-name="shop-2"' in html and "gone" in html
    assert "/static/cluster.js" in html and 'http-equiv="refresh"' in html
    assert '<script src="/static/cluster.js" defer></script>' in html  # no inline script
    assert 'href="/cluster"' in shop_app.test_client().get("/").get_data(as_text=True)


def test_the_heartbeat_thread_beats_at_once_and_removes_its_key_on_stop(redis_client):
    beat = heartbeat.Heartbeat(redis_client, "shop-9", lambda: 0, interval=0.2).start()
    key = keys.cluster_worker("shop-9", beat.pid)
    try:
        procs.wait_until(lambda: redis_client.exists(key), timeout=5, what="the first beat")
    finally:
        beat.stop()
    assert not redis_client.exists(key)
    assert redis_client.zscore(keys.cluster_workers(), f"shop-9|{beat.pid}") is not None


# -- logs -------------------------------------------------------------------------


def test_the_access_line_is_json_without_the_query_string() -> None:
    record = logs.access_record(
        replica="shop-1",
        request_id="rid-1",
        method="GET",
        path="/login?next=/cart&token=secret-value",
        status=200,
        seconds=0.0123,
    )
    assert record["path"] == "/login" and record["duration_ms"] == 12.3
    assert "secret-value" not in json.dumps(record)
    assert set(record) == {"ts", "replica", "request_id", "method", "path", "status", "duration_ms"}


def test_requests_with_a_query_log_only_their_path(shop_app, caplog) -> None:
    with caplog.at_level("INFO", logger=logs.ACCESS_LOGGER):
        shop_app.test_client().get("/login?next=/orders&password=hunter2-secret")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == logs.ACCESS_LOGGER]
    assert lines and lines[-1]["path"] == "/login" and lines[-1]["status"] == 200
    assert "hunter2-secret" not in caplog.text


# -- static: the gunicorn master and the Prometheus deployment -------------------


@pytest.mark.static
def test_loading_the_gunicorn_config_does_not_import_prometheus_client() -> None:
    """prometheus_client fixes its mode at import: the master must not import it early."""
    code = (
        "import sys, shop.gunicorn_conf as c; "
        "print('prometheus_client' in sys.modules, c.metrics_dir.name.startswith('shop-metrics'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["SHOP_BIND"] = "127.0.0.1:1"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.stdout.split() == ["False", "True"], out.stderr


@pytest.mark.static
def test_prometheus_profile_scrapes_the_shop_service_through_docker_dns() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "shop"]
    (sd,) = job["dns_sd_configs"]
    assert sd["type"] == "A" and sd["names"] == ["shop"] and sd["port"] == 8000
    assert job.get("metrics_path", "/metrics") == "/metrics"

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["observability"]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert all(p.startswith("127.0.0.1:") for p in prometheus["ports"])
    # the shop really binds the port Prometheus scrapes
    assert compose["services"]["shop"]["environment"]["SHOP_BIND"].endswith(f":{sd['port']}")
    # docker-compose itself accepts the file with the profile (validation only, no engine)
    env = {**os.environ, "REDIS_PASSWORD": "x", "SECRET_KEY": "y"}
    subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "--profile", "observability",
         "config", "-q"],
        env=env, timeout=60, check=True,
    )  # fmt: skip


def test_heartbeat_buckets_cover_the_last_minute() -> None:
    now = time.time()
    assert heartbeat.bucket_of(now) == int(now // 10)
    assert heartbeat.BUCKET_SECONDS * heartbeat.MINUTE_BUCKETS == 60
    assert heartbeat.BUCKET_TTL_SECONDS > 60
