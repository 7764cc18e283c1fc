"""The cluster view and log hygiene on a real cluster started by the launcher.

One cluster (3 replicas) serves the module: /api/cluster lists every replica,
drops a SIGKILLed one within 5 s and lists it again after `start`; `status
--json` carries heartbeats, request counts and nginx's stub_status; after a
whole shopping flow through nginx, no file under the workdir holds the session
cookie, the password or an Idempotency-Key.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cluster_support import Launcher, restoring, running_cluster

from shop.cluster import nginxconf, procs

pytestmark = pytest.mark.cluster

REPLICAS = ["shop-1", "shop-2", "shop-3"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    with running_cluster(tmp_path_factory.mktemp("obs-cluster"), replicas=3) as launcher:
        yield launcher


@pytest.fixture(autouse=True)
def as_promised(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test finds the 3 replicas running and in rotation, whatever ran before."""
    yield from restoring(request, "cluster", len(REPLICAS))


def cluster_view(url: str) -> dict[str, Any]:
    response = requests.get(f"{url}/api/cluster", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def alive_names(url: str) -> set[str]:
    return {r["name"] for r in cluster_view(url)["replicas"] if r["alive"]}


def test_api_cluster_lists_every_replica_with_its_workers(cluster: Launcher) -> None:
    procs.wait_until(
        lambda: alive_names(cluster.url) == set(REPLICAS), timeout=10, what="3 replicas beating"
    )
    view = cluster_view(cluster.url)
    assert view["served_by"] in REPLICAS
    for replica in view["replicas"]:
        assert replica["workers"] == 2 and len(replica["pids"]) == 2, replica
        assert replica["uptime_seconds"] is not None and replica["requests_total"] is not None
    page = requests.get(f"{cluster.url}/cluster", timeout=5)
    assert page.status_code == 200 and page.headers["X-Served-By"] in page.text
    script = requests.get(f"{cluster.url}/static/cluster.js", timeout=5)
    assert script.status_code == 200 and "fetch(" in script.text  # served by nginx itself


def test_a_killed_replica_is_gone_within_5_s_and_back_after_start(cluster: Launcher) -> None:
    procs.wait_until(lambda: "shop-2" in alive_names(cluster.url), timeout=10, what="shop-2")
    cluster.run("kill", "shop-2")
    killed_at = time.monotonic()
    procs.wait_until(
        lambda: "shop-2" not in alive_names(cluster.url), timeout=8, what="shop-2 gone"
    )
    assert time.monotonic() - killed_at < 5.0
    gone = next(r for r in cluster_view(cluster.url)["replicas"] if r["name"] == "shop-2")
    assert gone["alive"] is False and gone["workers"] == 0  # still listed, as gone
    status = {r["name"]: r for r in cluster.status()["replicas"]}
    assert status["shop-2"]["heartbeat"] is False and status["shop-2"]["alive"] is False

    cluster.run("start", "shop-2")
    procs.wait_until(
        lambda: alive_names(cluster.url) == set(REPLICAS), timeout=10, what="shop-2 back"
    )


def test_status_json_adds_request_counts_and_nginx_counters(cluster: Launcher) -> None:
    with requests.Session() as http:
        for _ in range(12):
            assert http.get(f"{cluster.url}/api/products", timeout=5).status_code == 200

    def counted() -> bool:
        replicas = cluster.status()["replicas"]
        return all(r["heartbeat"] and (r["requests_last_minute"] or 0) > 0 for r in replicas)

    procs.wait_until(counted, timeout=10, what="request counts in the heartbeats")
    status = cluster.status()
    for replica in status["replicas"]:
        assert {"name", "pid", "port", "alive", "ready"} <= set(replica)  # the documented fields
        assert replica["requests"] >= 1 and replica["ready"]
    assert status["nginx"]["requests"] >= 12 and status["nginx"]["active_connections"] >= 1
    table = cluster.run("status").stdout
    assert "requests" in table and "heartbeat" in table


def test_stub_status_answers_loopback_and_metrics_are_not_forwarded(cluster: Launcher) -> None:
    stub = requests.get(f"{cluster.url}{nginxconf.STATUS_PATH}", timeout=5)
    assert stub.status_code == 200 and stub.text.startswith("Active connections:")
    conf = (cluster.workdir / "nginx" / "nginx.conf").read_text()
    block = conf[conf.index(f"location = {nginxconf.STATUS_PATH}") :]
    block = block[: block.index("}")]
    assert "allow 127.0.0.1;" in block and "deny all;" in block
    assert requests.get(f"{cluster.url}/metrics", timeout=5).status_code == 403
    # ...while each replica serves its own, summed over its workers
    port = cluster.status()["replicas"][0]["port"]
    metrics = requests.get(f"http://{procs.LOOPBACK}:{port}/metrics", timeout=5)
    assert metrics.status_code == 200 and "shop_http_requests_total" in metrics.text


def files_containing(root: Path, secrets: dict[str, str]) -> dict[str, list[str]]:
    """Which of `secrets` (name -> value) appear in which file under `root`."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [name for name, value in secrets.items() if value.encode() in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def test_no_log_holds_the_cookie_password_or_idempotency_key(cluster: Launcher) -> None:
    tag = uuid.uuid4().hex[:8]
    password = f"pw-{uuid.uuid4().hex}"
    keys = [f"idem-{uuid.uuid4().hex}" for _ in range(4)]
    query_secret = f"q-{uuid.uuid4().hex}"
    credentials = {"username": f"logcheck-{tag}", "password": password}
    cookies: set[str] = set()
    served: set[str] = set()
    with requests.Session() as http:

        def call(method: str, path: str, status: int, key: str | None = None, **kw: Any) -> None:
            headers = {"Idempotency-Key": key} if key else {}
            response = http.request(
                method, f"{cluster.url}{path}", headers=headers, timeout=10, **kw
            )
            assert response.status_code == status, (path, response.text)
            served.add(response.headers["X-Served-By"])
            cookies.update(c.value for c in http.cookies if c.name == "session")

        call("POST", "/api/cart/items", 201, keys[0], json={"product_id": "scale", "qty": 1})
        call("POST", "/api/register", 201, keys[1], json=credentials)
        call("POST", "/api/login", 200, json=credentials)
        call("GET", f"/cart?next=/orders&token={query_secret}", 200)
        call("POST", "/api/cart/items", 201, keys[2], json={"product_id": "scale", "qty": 2})
        call("POST", "/api/checkout", 201, keys[3])
        call("GET", "/api/orders", 200)
        call("GET", "/cluster", 200)
        call("POST", "/api/logout", 204)
    assert cookies and len(served) >= 2, (cookies, served)

    secrets = {"password": password, "query value": query_secret}
    secrets.update({f"cookie {i}": value for i, value in enumerate(sorted(cookies))})
    secrets.update({f"Idempotency-Key {i}": value for i, value in enumerate(keys)})
    logs = cluster.workdir / "logs"

    # The last request is in the logs (the replica's and nginx's) before we look.
    def logged_logout() -> bool:
        replica_logs = "".join(p.read_text() for p in logs.glob("shop-*.log"))
        nginx_log = (logs / "nginx-access.log").read_text()
        return '"path":"/api/logout"' in replica_logs and "/api/logout" in nginx_log

    procs.wait_until(logged_logout, timeout=5, what="the logout's access lines")
    assert files_containing(cluster.workdir, secrets) == {}
