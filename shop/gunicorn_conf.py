"""gunicorn settings for one shop replica; every value can be set from the environment.

==============================  =================  =============================================
environment variable            default            why
==============================  =================  =============================================
``SHOP_BIND``                   127.0.0.1:8000     only nginx on this host should reach us
``SHOP_WORKERS``                2                  one process per core on the 2-core target
``SHOP_THREADS``                4                  gthread: threads overlap Redis round trips
``SHOP_TIMEOUT``                30                 a worker silent this long is restarted
``SHOP_GRACEFUL_TIMEOUT``       30                 in-flight requests finish on SIGTERM
``SHOP_KEEPALIVE``              75                 longer than nginx's upstream keepalive_timeout
                                                   (60 s), so nginx always closes first and never
                                                   reuses a connection we just dropped
``SHOP_FORWARDED_ALLOW_IPS``    127.0.0.1          trust X-Forwarded-* only from the local nginx
``SHOP_ACCESS_LOG``             ``-`` (stdout)     access log path
``SHOP_CONTROL_SOCKET``         (disabled)         a path enables gunicorn's control socket;
                                                   off by default because several masters on one
                                                   machine collide on ~/.gunicorn/gunicorn.ctl
``REPLICA_NAME``                the host name      in the access log and process title
==============================  =================  =============================================

The worker is ``gthread``: the sync worker closes the connection after every
response, which defeats nginx's upstream keepalive.
"""

import os
import socket

replica = os.environ.get("REPLICA_NAME") or socket.gethostname()

bind = os.environ.get("SHOP_BIND", "127.0.0.1:8000").split(",")
worker_class = "gthread"
workers = int(os.environ.get("SHOP_WORKERS", "2"))
threads = int(os.environ.get("SHOP_THREADS", "4"))
timeout = int(os.environ.get("SHOP_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("SHOP_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("SHOP_KEEPALIVE", "75"))
forwarded_allow_ips = os.environ.get("SHOP_FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = f"shop-{replica}"

_control_socket = os.environ.get("SHOP_CONTROL_SOCKET", "")
if _control_socket:
    control_socket = _control_socket
else:
    control_socket_disable = True

accesslog = os.environ.get("SHOP_ACCESS_LOG", "-")
errorlog = os.environ.get("SHOP_ERROR_LOG", "-")
# Time, remote address, replica, request id (nginx's X-Request-ID, echoed in the
# response even when the app had to make one up), request, status, bytes, ms.
access_log_format = (
    f'%(t)s %(h)s {replica} %({{x-request-id}}o)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
)
