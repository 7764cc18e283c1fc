"""Who may reach what, below the app (issue 18): the replicas and the launcher's cluster.

- A replica bounds how long a request may take to arrive, so clients that
  trickle their headers cannot hold its threads, and it names no server.
"""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest
import requests
from shop_support import gunicorn_replica

from shop.cluster import procs

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
