"""The servers the session variants run on: one redis-server, one gunicorn per
variant (identical settings), one nginx in front of all of them.

Every variant is up for the whole run, so the harness can interleave them
(bare, cookie, ..., bare, cookie, ...) instead of running each in its own
time slice, which on this shared machine would measure the neighbours.
Processes come from `shop.cluster.procs` and are stopped by pid.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

from shop.cluster import procs

from .apps import REDIS_DB

# The same for every variant. gthread keeps nginx's upstream connections open
# (DESIGN.md pitfall: the sync worker closes them after every response).
# 2 workers = the machine's 2 cores; 4 threads cover the time spent waiting on Redis.
GUNICORN_SETTINGS = ("--worker-class", "gthread", "--workers", "2", "--threads", "4")
STATIC_PATH = "/static-probe"

# One nginx, one `server` per variant (each on its own port, so wrk hits the
# same path everywhere), plus one server that answers without any upstream:
# wrk against it shows how far wrk itself can go on this machine. The proxy
# directives are the ones that matter for speed in the cluster's template
# (shop/cluster/nginx.conf.j2): HTTP/1.1 with upstream keepalive.
# That template renders one upstream, so this small one is rendered here.
NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path       {prefix}/tmp/proxy;
    fastcgi_temp_path     {prefix}/tmp/fastcgi;
    uwsgi_temp_path       {prefix}/tmp/uwsgi;
    scgi_temp_path        {prefix}/tmp/scgi;
    # Logging costs the same for every variant; off, so nginx stays small.
    access_log off;
{blocks}
    server {{
        listen 127.0.0.1:{static_port};
        location = {static_path} {{ default_type application/json; return 200 '{{"ok":true}}'; }}
    }}
}}
"""

NGINX_VARIANT_BLOCK = """\
    upstream {name} {{ server 127.0.0.1:{upstream}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
        }}
    }}
"""


@dataclass
class Stack:
    """What runs, where: `url(variant)` is the variant behind nginx."""

    workdir: Path
    redis_port: int
    static_port: int
    ports: dict[str, int] = field(default_factory=dict)  # variant -> nginx port
    gunicorn_pids: dict[str, int] = field(default_factory=dict)
    nginx_pid: int = 0
    redis_pid: int = 0

    def url(self, variant: str, path: str = "") -> str:
        return f"http://{procs.LOOPBACK}:{self.ports[variant]}{path}"

    @property
    def static_url(self) -> str:
        return f"http://{procs.LOOPBACK}:{self.static_port}{STATIC_PATH}"

    def redis(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host=procs.LOOPBACK, port=self.redis_port, db=db, socket_timeout=10)

    def variant_redis(self, variant: str) -> redis.Redis | None:
        return self.redis(REDIS_DB[variant]) if variant in REDIS_DB else None


def gunicorn_argv(app_spec: str, port: int, workdir: Path) -> list[str]:
    """gunicorn for one app on loopback; no control socket (DESIGN.md: they collide)."""
    return [
        sys.executable, "-m", "gunicorn", app_spec,
        "--bind", f"{procs.LOOPBACK}:{port}",
        *GUNICORN_SETTINGS,
        "--no-control-socket",
        "--worker-tmp-dir", str(workdir),
        "--log-level", "warning",
    ]  # fmt: skip


@contextmanager
def running_stack(workdir: Path, variants: Sequence[str]) -> Iterator[Stack]:
    """Start redis-server, a gunicorn per variant and nginx; stop them all on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir=workdir, redis_port=procs.free_port(), static_port=procs.free_port())
    with ExitStack() as cleanup:
        # The redis-server config the cluster uses (AOF, fsync every second).
        redis_proc = procs.start_redis(workdir / "redis", stack.redis_port)
        cleanup.callback(procs.stop_process, redis_proc.pid)
        stack.redis_pid = redis_proc.pid

        env = {**os.environ, "BENCH_REDIS_URL": f"redis://{procs.LOOPBACK}:{stack.redis_port}"}
        upstreams: dict[str, int] = {}
        for variant in variants:
            upstreams[variant] = procs.free_port()
            proc = procs.spawn(
                gunicorn_argv(f'bench.apps:create_app("{variant}")', upstreams[variant], workdir),
                log_path=workdir / f"gunicorn-{variant}.log",
                env=env,
                cwd=Path(__file__).resolve().parent.parent,
            )
            cleanup.callback(procs.stop_process, proc.pid)
            stack.gunicorn_pids[variant] = proc.pid

        blocks = []
        for variant in variants:
            stack.ports[variant] = procs.free_port()
            blocks.append(
                NGINX_VARIANT_BLOCK.format(
                    name=variant, upstream=upstreams[variant], port=stack.ports[variant]
                )
            )
        prefix = workdir / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                prefix=prefix,
                blocks="".join(blocks),
                static_port=stack.static_port,
                static_path=STATIC_PATH,
            )
        )
        nginx = procs.spawn(
            [procs.find_binary("nginx"), "-p", str(prefix), "-c", str(conf)],
            log_path=prefix / "nginx.log",
        )
        cleanup.callback(procs.stop_process, nginx.pid)
        stack.nginx_pid = nginx.pid

        for variant in variants:
            procs.wait_until(
                lambda v=variant: requests.get(stack.url(v, "/read"), timeout=1).ok,
                timeout=30,
                what=f"variant {variant} behind nginx (log: {workdir}/gunicorn-{variant}.log)",
            )
        yield stack
