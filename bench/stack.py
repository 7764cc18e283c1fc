"""The servers the session variants run on: one redis-server, and per variant one
gunicorn and one nginx in front of it (identical settings everywhere).

Every variant is up for the whole run, so the harness can interleave them
(bare, cookie, ..., bare, cookie, ...) instead of running each in its own
time slice, which on this shared machine would measure the neighbours.
gunicorn and nginx are started with the project's one command line for each
(`shop.cluster.appserver.gunicorn_argv`, `shop.cluster.nginxconf.argv`), and
nginx's config is the cluster's own template, so a variant is measured behind
the load balancer the shop runs behind. Processes are stopped by pid.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

from shop.cluster import appserver, nginxconf, procs

from .apps import REDIS_DB

# The same for every variant. gthread keeps nginx's upstream connections open
# (the sync worker closes them after every response); 2 workers = the
# machine's 2 cores; 4 threads cover the time spent waiting on Redis; a
# keepalive longer than nginx's upstream keepalive_timeout (30 s), so nginx
# always closes an idle connection first (gunicorn's default is 2 s).
GUNICORN_SETTINGS = (
    "--worker-class", "gthread", "--workers", "2", "--threads", "4", "--keep-alive", "75",
)  # fmt: skip
# wrk against this path of an nginx answers without any upstream: how far wrk
# itself can go on this machine.
STATIC_PATH = nginxconf.HEALTH_PATH
# How long a variant may take to answer through its nginx after the start: its
# app imports Flask in a second or two; half a minute means it is broken.
READY_TIMEOUT = 30.0


@dataclass
class Stack:
    """What runs, where: `url(variant)` is the variant behind its nginx."""

    workdir: Path
    redis_port: int
    ports: dict[str, int] = field(default_factory=dict)  # variant -> its nginx's port
    gunicorn_pids: dict[str, int] = field(default_factory=dict)
    nginx_pids: dict[str, int] = field(default_factory=dict)
    redis_pid: int = 0

    def url(self, variant: str, path: str = "") -> str:
        return f"http://{procs.LOOPBACK}:{self.ports[variant]}{path}"

    @property
    def static_url(self) -> str:
        """An nginx answer without any upstream (the first variant's nginx)."""
        return self.url(next(iter(self.ports)), STATIC_PATH)

    def redis(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host=procs.LOOPBACK, port=self.redis_port, db=db, socket_timeout=10)

    def variant_redis(self, variant: str) -> redis.Redis | None:
        return self.redis(REDIS_DB[variant]) if variant in REDIS_DB else None


def nginx_settings(prefix: Path, port: int, upstream: int) -> nginxconf.NginxSettings:
    """The launcher's rendering for one upstream, with one worker (only one variant
    is loaded at a time) and no access log (it would cost every variant the same)."""
    local = nginxconf.local_settings(
        prefix=prefix,
        listen=f"{procs.LOOPBACK}:{port}",
        servers=[f"{procs.LOOPBACK}:{upstream}"],
        log_dir=prefix,
    )
    return dataclasses.replace(local, worker_processes=1, access_log=None)


@contextmanager
def running_stack(workdir: Path, variants: Sequence[str]) -> Iterator[Stack]:
    """Start redis-server, a gunicorn and an nginx per variant; stop them all on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir=workdir, redis_port=procs.free_port())
    with ExitStack() as cleanup:
        # The redis-server config the cluster uses (AOF, fsync every second).
        redis_proc = procs.start_redis(workdir / "redis", stack.redis_port)
        cleanup.callback(procs.stop_process, redis_proc.pid)
        stack.redis_pid = redis_proc.pid

        env = {**os.environ, "BENCH_REDIS_URL": f"redis://{procs.LOOPBACK}:{stack.redis_port}"}
        for variant in variants:
            upstream, stack.ports[variant] = procs.free_port(), procs.free_port()
            argv = appserver.gunicorn_argv(
                f'bench.apps:create_app("{variant}")',
                bind=f"{procs.LOOPBACK}:{upstream}",
                config=None,  # the shop's own settings are for the shop
                options=(
                    *GUNICORN_SETTINGS,
                    "--worker-tmp-dir",
                    str(workdir),
                    "--log-level",
                    "warning",
                ),  # fmt: skip
            )
            proc = procs.spawn(
                argv,
                log_path=workdir / f"gunicorn-{variant}.log",
                env=env,
                cwd=Path(__file__).resolve().parent.parent,
            )
            cleanup.callback(procs.stop_process, proc.pid)
            stack.gunicorn_pids[variant] = proc.pid

            prefix = workdir / f"nginx-{variant}"
            (prefix / "tmp").mkdir(parents=True, exist_ok=True)
            conf = prefix / "nginx.conf"
            conf.write_text(
                nginxconf.render(nginx_settings(prefix, stack.ports[variant], upstream))
            )
            nginx = procs.spawn(
                nginxconf.argv(prefix=prefix, conf=conf, error_log=prefix / "nginx-error.log"),
                log_path=prefix / "nginx.log",
            )
            cleanup.callback(procs.stop_process, nginx.pid)
            stack.nginx_pids[variant] = nginx.pid

        for variant in variants:
            procs.wait_until(
                lambda v=variant: requests.get(stack.url(v, "/read"), timeout=1).ok,
                timeout=READY_TIMEOUT,
                what=f"variant {variant} behind nginx (log: {workdir}/gunicorn-{variant}.log)",
            )
        yield stack
