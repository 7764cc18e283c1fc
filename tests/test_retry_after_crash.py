"""A replica takes a POST, applies it and crashes before answering: nginx, with
the cluster's own config, retries the POST on another replica, which answers it
from the idempotency record, so the shopper gets one answer and the cart counts
the add once.

Real processes throughout: redis-server, two gunicorn replicas of the shop (one
of them wrapped by tests/crashing_replica.py, which SIGKILLs its own process
group after the add is applied) and nginx rendered from shop/cluster/nginx.conf.j2.
A replica killed while idle refuses the connection, and nginx retries a request
it never sent whatever its config says; only a POST already sent needs
`proxy_next_upstream ... non_idempotent`, and only the Idempotency-Key nginx
adds makes that retry safe.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from shop_support import PASSWORD, GunicornReplica, gunicorn_replica

from shop.cluster import nginxconf, procs

pytestmark = pytest.mark.cluster

TESTS = Path(__file__).resolve().parent
# nginx answers its health check within a second of starting; 15 s is a loaded machine.
NGINX_READY_TIMEOUT = 15
ADDS = 4  # round robin over two replicas: the crashing one takes one of the first two


@pytest.fixture
def crashing_and_healthy(redis_server, redis_client, tmp_path: Path):
    """(crashing replica, healthy replica), both on the test redis-server."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    with (
        gunicorn_replica(
            "crashing", redis_server.url, tmp_path,
            app="crashing_replica:app", env={"PYTHONPATH": path},
        ) as crashing,
        gunicorn_replica("healthy", redis_server.url, tmp_path) as healthy,
    ):  # fmt: skip
        yield crashing, healthy


@pytest.fixture
def nginx(
    crashing_and_healthy: tuple[GunicornReplica, GunicornReplica], tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """The launcher's nginx config in front of both replicas, crashing first: (url, access log)."""
    prefix, port = tmp_path / "nginx", procs.free_port()
    (prefix / "tmp").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    servers = [f"{procs.LOOPBACK}:{replica.port}" for replica in crashing_and_healthy]
    conf.write_text(
        nginxconf.render_local(
            prefix=prefix, listen=f"{procs.LOOPBACK}:{port}", servers=servers, log_dir=prefix
        )
    )
    argv = nginxconf.argv(prefix=prefix, conf=conf, error_log=prefix / "nginx-error.log")
    proc = procs.spawn(argv, log_path=prefix / "nginx.out")
    url = f"http://{procs.LOOPBACK}:{port}"
    try:
        procs.wait_until(
            lambda: procs.http_ok(f"{url}{nginxconf.HEALTH_PATH}"),
            timeout=NGINX_READY_TIMEOUT,
            what=f"nginx (log: {prefix / 'nginx-error.log'})",
        )
        yield url, prefix / "nginx-access.log"
    finally:
        procs.stop_process(proc.pid, timeout=10)


def replays(replica: GunicornReplica) -> float:
    """How many idempotent replays the replica's metrics count."""
    text = requests.get(f"{replica.url}/metrics", timeout=5).text
    counts = re.findall(r"^shop_idempotent_replays_total\S* (\S+)$", text, re.MULTILINE)
    return sum(float(count) for count in counts)


def test_a_post_the_replica_applied_before_crashing_is_answered_once_by_another(
    crashing_and_healthy: tuple[GunicornReplica, GunicornReplica], nginx: tuple[str, Path]
) -> None:
    crashing, healthy = crashing_and_healthy
    url, access_log = nginx
    with requests.Session() as http:
        account = {"username": "crash-witness", "password": PASSWORD}
        assert http.post(f"{url}/api/register", json=account, timeout=10).status_code == 201
        assert http.post(f"{url}/api/login", json=account, timeout=10).status_code == 200
        # No Idempotency-Key from the client: nginx makes one, and its retry carries it.
        one = {"product_id": "scale", "qty": 1}
        for _ in range(ADDS):
            add = http.post(f"{url}/api/cart/items", json=one, timeout=30)
            assert add.status_code == 201, add.text
            assert add.headers["X-Served-By"] == "healthy"  # the crashed one never answered
        cart = http.get(f"{url}/api/cart", timeout=10).json()

    # The crashing replica took a POST and died of it: every process of it is gone.
    assert not procs.pid_alive(crashing.pid) and procs.group_pids(crashing.pid) == set()
    # The POST it had applied was sent again to the healthy replica, which
    # replayed the recorded result instead of adding again...
    assert replays(healthy) == 1
    # ...so the shopper's cart counts every add once.
    assert [(i["product_id"], i["qty"]) for i in cart["items"]] == [("scale", ADDS)]
    # nginx's access log shows both attempts of that one request.
    procs.wait_until(lambda: access_log.stat().st_size > 0, timeout=5, what="the access log")
    crash, live = (re.escape(f"127.0.0.1:{r.port}") for r in (crashing, healthy))
    retried = f'"POST /api/cart/items" 201 .* upstream={crash}, {live} ustatus=502, 201 '
    tried_both = re.findall(retried, access_log.read_text())
    assert len(tried_both) == 1, access_log.read_text()
