"""Who may reach what, below the app (issue 18): the replicas and the launcher's cluster.

- A replica bounds how long a request may take to arrive, so clients that
  trickle their headers cannot hold its threads, and it names no server.
- A replica closes a loopback connection from another account's process
  before reading a byte: other users of the machine reach it through nginx.
- In the launcher's cluster every Redis node and Sentinel asks for the
  cluster's password (kept in the workdir, never on a command line), and
  nothing in the workdir is open to other users.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from cluster_support import Launcher, running_cluster
from shop_support import gunicorn_replica

from shop import worker
from shop.cluster import procs
from shop.worker import loopback_peer_uid

# -- slow clients at the replica --------------------------------------------------

READ_TIMEOUT = 1.5  # SHOP_REQUEST_READ_TIMEOUT for the replica under test
THREADS = 2  # one worker with two threads: every thread can be held at once
TRICKLERS = 3 * THREADS
# How long the tricklers keep sending: far beyond the deadline, so on a worker
# without one they hold every thread for the whole test.
TRICKLE_SECONDS = 15.0


@pytest.fixture
def one_worker_replica(redis_server, redis_client, tmp_path):
    env = {
        "SHOP_WORKERS": "1",
        "SHOP_THREADS": str(THREADS),
        "SHOP_REQUEST_READ_TIMEOUT": str(READ_TIMEOUT),
        "SHOP_HEARTBEAT_INTERVAL": "0",
    }
    with gunicorn_replica("slow-1", redis_server.url, tmp_path, env=env) as replica:
        yield replica


def trickle(port: int, stop: threading.Event, began: list, closed_after: list[float]) -> None:
    """Send a request's headers one byte every 0.2 s until the server closes or `stop`."""
    started = time.monotonic()
    with socket.create_connection((procs.LOOPBACK, port), timeout=2) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        began.append(port)
        while not stop.is_set() and time.monotonic() - started < TRICKLE_SECONDS:
            try:
                sock.sendall(b"a")
                readable, _, _ = select.select([sock], [], [], 0)
                if readable and sock.recv(1) == b"":
                    break  # the server closed its side
            except OSError:
                break  # reset
            stop.wait(0.2)
        else:
            return
    closed_after.append(time.monotonic() - started)


def test_clients_trickling_headers_cannot_hold_every_thread(one_worker_replica):
    port = one_worker_replica.port
    stop, began, closed_after = threading.Event(), [], []
    tricklers = [
        threading.Thread(target=trickle, args=(port, stop, began, closed_after), daemon=True)
        for _ in range(TRICKLERS)
    ]
    for thread in tricklers:
        thread.start()
    try:
        # They come first: their bytes arrive before ours, so they take the threads.
        procs.wait_until(lambda: len(began) == TRICKLERS, timeout=5, what="the tricklers")
        started = time.monotonic()
        response = requests.get(f"{one_worker_replica.url}/healthz", timeout=10)
        waited = time.monotonic() - started
        assert response.status_code == 200
        # Each trickler holds a thread for the deadline at most: three rounds of two.
        assert waited < 3 * READ_TIMEOUT + 3, waited
        # And every one of them was cut off by the replica, none outlasted its stint.
        for thread in tricklers:
            thread.join(timeout=TRICKLE_SECONDS + 5)
        assert len(closed_after) == TRICKLERS, closed_after
        assert max(closed_after) < TRICKLERS / THREADS * READ_TIMEOUT + 3, closed_after
    finally:
        stop.set()  # on a failure above, the tricklers stop now


def test_a_replica_names_no_server(one_worker_replica):
    response = requests.get(f"{one_worker_replica.url}/healthz", timeout=5)
    assert response.status_code == 200 and "Server" not in response.headers


# -- the launcher's cluster: who may reach Redis and the replicas -------------------

NOBODY = 65534  # a local user who is not the cluster's
# The system's own Python, which that user may run (the project's virtualenv
# may live in a home folder nobody else can enter).
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """An HA cluster (nodes and Sentinels) with two replicas, as `up` makes it."""
    with running_cluster(tmp_path_factory.mktemp("secured"), 2, "ha") as launcher:
        yield launcher


def redis_endpoints(status: dict) -> list[tuple[str, int]]:
    redis_view = status["redis"]
    return [(p["name"], p["port"]) for p in [*redis_view["nodes"], *redis_view["sentinels"]]]


@pytest.mark.cluster
def test_every_redis_node_and_sentinel_refuses_a_client_without_the_password(secured):
    password = secured.redis_password
    for name, port in redis_endpoints(secured.status()):
        stranger = redis.Redis(procs.LOOPBACK, port, socket_timeout=5)
        with stranger, pytest.raises(redis.AuthenticationError):
            stranger.ping()
        with redis.Redis(procs.LOOPBACK, port, password=password, socket_timeout=5) as owner:
            assert owner.ping(), name


@pytest.mark.cluster
def test_the_password_is_on_no_command_line_and_in_no_status(secured):
    password = secured.redis_password
    assert len(password) >= 32
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert password.encode() not in cmdline.read_bytes(), cmdline
        except OSError:
            continue  # gone meanwhile
    assert password not in secured.run("status", "--json").stdout
    assert password not in (secured.workdir / "state.json").read_text()


@pytest.mark.cluster
def test_nothing_in_the_workdir_is_open_to_other_users(secured):
    secured.run("status")  # every process has written its files by now
    opened = [
        f"{oct(path.lstat().st_mode & 0o777)} {path}"
        for path in [secured.workdir, *secured.workdir.rglob("*")]
        if path.lstat().st_mode & 0o077
    ]
    assert opened == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")
def test_another_local_users_process_cannot_reach_a_replica(one_worker_replica):
    """A process of another account connecting to the replica's loopback port is
    closed before anything is read; the replica's own user is served."""
    probe = (
        "import socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
        "s.sendall(b'GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
        "sys.stdout.write(repr(s.recv(64)))\n"
    )
    stranger = subprocess.run(
        [SYSTEM_PYTHON, "-c", probe, str(one_worker_replica.port)],
        user=NOBODY, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert stranger.stdout in ("b''", ""), stranger  # closed (or reset): no answer at all
    assert "HTTP/1.1" not in stranger.stdout
    assert requests.get(f"{one_worker_replica.url}/healthz", timeout=5).status_code == 200
    log = one_worker_replica.log_path.read_text()
    assert f"refused a connection from a local process of uid {NOBODY}" in log


def test_the_kernel_names_the_owner_of_a_loopback_connection():
    server = socket.create_server((procs.LOOPBACK, 0))
    client = socket.create_connection(server.getsockname(), timeout=5)
    accepted, peer = server.accept()
    with server, client, accepted:
        local = accepted.getsockname()
        assert loopback_peer_uid(peer, local) == os.getuid()
        # The same from /proc/net/tcp, where netlink is not allowed.
        assert worker._proc_uid(peer, local) == os.getuid()
        assert loopback_peer_uid((procs.LOOPBACK, 1), local) is None  # no such socket


@pytest.mark.cluster
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")
def test_another_local_user_reaches_neither_a_replica_nor_the_data(secured):
    status = secured.status()
    probe = (
        "import socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
        "s.sendall(b'GET /api/products HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
        "sys.exit(3 if s.recv(64) else 0)\n"
    )
    for replica in status["replicas"]:
        result = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe, str(replica["port"])],
            user=NOBODY, capture_output=True, timeout=30,
        )  # fmt: skip
        assert result.returncode in (0, 1), (replica["name"], result)  # closed or reset
    reading = subprocess.run(
        ["cat", str(secured.workdir / "redis_password")], user=NOBODY, capture_output=True,
        timeout=30,
    )  # fmt: skip
    assert reading.returncode != 0
    # ...while the shop itself answers that user through nginx.
    through_nginx = subprocess.run(
        [SYSTEM_PYTHON, "-c", probe, str(secured.port)],
        user=NOBODY, capture_output=True, timeout=30,
    )  # fmt: skip
    assert through_nginx.returncode == 3, through_nginx
