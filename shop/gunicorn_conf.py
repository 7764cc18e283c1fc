"""gunicorn settings for one shop replica; every value can be set from the environment
(read by shop/config.py, like every other setting of the shop).

==============================  =================  =============================================
environment variable            default            why
==============================  =================  =============================================
``SHOP_BIND``                   127.0.0.1:8000     only nginx on this host should reach us
``SHOP_WORKERS``                2                  one process per core on the 2-core target
``SHOP_THREADS``                4                  gthread: threads overlap Redis round trips
``SHOP_TIMEOUT``                30                 a worker whose main loop is silent this long
                                                   (deadlocked) is killed and replaced. Not what
                                                   bounds a shopper's wait: nginx gives up on a
                                                   replica after 3 s (proxy_read_timeout) and
                                                   resends elsewhere. A restart costs seconds of
                                                   imports, so a shorter stall (or `freeze`) is
                                                   ridden out rather than punished
``SHOP_GRACEFUL_TIMEOUT``       30                 in-flight requests finish on SIGTERM; they take
                                                   milliseconds, so this bounds only a stuck one
``SHOP_KEEPALIVE``              75                 longer than nginx's upstream keepalive_timeout
                                                   (30 s), so nginx always closes first and never
                                                   reuses a connection we just dropped
``SHOP_REQUEST_READ_TIMEOUT``   5                  a request (line, headers, body) must arrive
                                                   within this many seconds of a thread taking
                                                   it up (shop/worker.py); nginx sends one in ms
``SHOP_LOCAL_USERS``            (own user)         the local users (names or uids) whose processes
                                                   may connect over loopback (shop/worker.py):
                                                   other accounts reach the shop through nginx
``SHOP_FORWARDED_ALLOW_IPS``    127.0.0.1          trust X-Forwarded-* only from the local nginx
``SHOP_ACCESS_LOG``             (off)              gunicorn's own access log (path or ``-``);
                                                   off because the app writes one JSON line
                                                   per request itself (shop/logs.py)
``SHOP_ERROR_LOG``              ``-`` (stderr)     gunicorn's own messages (start, worker exits),
                                                   beside the app's warnings in the replica's log
``PROMETHEUS_MULTIPROC_DIR``    a temp dir per     where workers share metric values
                                bind address       (shop/metrics.py); emptied at start
``SHOP_CONTROL_SOCKET``         (disabled)         a path enables gunicorn's control socket;
                                                   off by default because several masters on one
                                                   machine collide on ~/.gunicorn/gunicorn.ctl
``REPLICA_NAME``                the host name      in the access log and process title
==============================  =================  =============================================

The worker is ``gthread`` (shop/worker.py refuses other users' local
processes, adds a read deadline per request and drops the Server header): the
sync worker closes the connection after every response, which defeats nginx's
upstream keepalive.

Metrics: prometheus_client decides between one process and multiprocess mode
when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``; so this file, read
by the master before any worker exists, sets it (one directory per replica:
replicas on one host must not add up each other's counters). ``on_starting``
empties it, since counters of a previous run would be added to this one, and
``child_exit`` tells prometheus_client a worker is gone (its live gauges stop
counting). ``SHOP_REPLICA_STARTED`` gives the heartbeat the replica's start time.
"""

import os
import time

from shop.config import load_server_settings

_settings = load_server_settings()
replica = _settings.replica

bind = _settings.bind
worker_class = "shop.worker.BoundedThreadWorker"
# Files gunicorn makes (a unix socket, should one be bound): its own user only.
umask = 0o077
workers = _settings.workers
threads = _settings.threads
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
forwarded_allow_ips = _settings.forwarded_allow_ips
proc_name = f"shop-{replica}"

if _settings.control_socket:
    control_socket = _settings.control_socket
else:
    control_socket_disable = True

accesslog = _settings.access_log
errorlog = _settings.error_log
# Only if SHOP_ACCESS_LOG asks for it. Time, remote address, replica, request id
# (nginx's X-Request-ID), method, path WITHOUT the query string (%(U)s, not the
# request line %(r)s, whose query could hold a value), status, bytes, ms. No
# request header: never a cookie or an Idempotency-Key.
access_log_format = f"%(t)s %(h)s {replica} %({{x-request-id}}o)s %(m)s %(U)s %(s)s %(b)s %(M)sms"

# Written, not read: prometheus_client (imported by the workers) and the app
# both take the directory from the environment the workers inherit.
metrics_dir = _settings.metrics_dir
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)


def on_starting(server) -> None:
    """Once, in the master before the first worker: an empty, private metrics directory."""
    metrics_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if metrics_dir.stat().st_uid != os.getuid():
        raise RuntimeError(f"{metrics_dir} belongs to another user; set PROMETHEUS_MULTIPROC_DIR")
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    # A restart (e.g. `shop-cluster start`) is a new replica start.
    os.environ["SHOP_REPLICA_STARTED"] = f"{time.time():.3f}"


def child_exit(server, worker) -> None:
    """In the master when a worker exits: its live gauges must stop counting."""
    from prometheus_client import multiprocess  # after the env var above is set

    multiprocess.mark_process_dead(worker.pid)
