"""The app server: the shop's replicas, each a gunicorn master and its workers.
Here are gunicorn's command line, a replica's environment, its start and its
readiness.

`gunicorn_argv` is the one command line for every gunicorn this project starts
(the launcher's replicas, the test fixtures', the benchmark's apps). The
launcher runs the app only through it: it never imports the Flask app.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from functools import cache

from . import hosts, procs, store
from .procs import ClusterError
from .state import Proc, State, Workdir

PREFIX = "shop-"
GUNICORN_CONFIG = "python:shop.gunicorn_conf"
WSGI_APP = "shop.wsgi:app"


def gunicorn_argv(
    app: str = WSGI_APP,
    *,
    bind: str,
    config: str | None = GUNICORN_CONFIG,
    name: str | None = None,
    options: Sequence[str] = (),
) -> list[str]:
    """`python -m gunicorn` serving `app` on `bind` (host:port), with the shop's
    gunicorn settings unless `config` is None, and extra command-line `options`."""
    argv = [sys.executable, "-m", "gunicorn"]
    if config:
        argv += ["--config", config]
    argv += ["--bind", bind]
    if name:
        argv += ["--name", name]
    argv += options
    if has_control_socket():
        # gunicorn 25.1+ would put every master's control socket at
        # ~/.gunicorn/gunicorn.ctl: masters on one machine would collide (and
        # it is outside the workdir). shop.gunicorn_conf turns it off too, for
        # the containers, which start gunicorn without this function.
        argv.append("--no-control-socket")
    return [*argv, app]


@cache
def has_control_socket() -> bool:
    """Whether the installed gunicorn has a control socket (25.1+) to turn off."""
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        return False
    return any(s.name == "control_socket" for s in KNOWN_SETTINGS)


def number(replica: Proc) -> int:
    """3 for shop-3."""
    return int(replica.name.removeprefix(PREFIX))


def environment(workdir: Workdir, replica: Proc, state: State) -> dict[str, str]:
    """The environment of one gunicorn replica (the shop reads its settings from it)."""
    return {
        **store.replica_settings(state),
        **os.environ,
        **hosts.replica_settings(state),
        "REDIS_URL": store.url(state),
        "SECRET_KEY": workdir.secret_key(),
        "REPLICA_NAME": replica.name,
        # memory: one gunicorn worker per replica (shop/config.py says why).
        "SHOP_STATE": state.app_state,
        "SHOP_BIND": replica.endpoint,
        "PYTHONUNBUFFERED": "1",
        # Where this replica's workers add up their metrics: inside the
        # workdir, one folder per replica (emptied by gunicorn at start).
        "PROMETHEUS_MULTIPROC_DIR": str(workdir.metrics_dir(replica)),
    }


def spawn(workdir: Workdir, replica: Proc, state: State) -> None:
    """Start `replica` on its port (recorded in it); `wait_ready` waits for it."""
    # prometheus_client writes there from the first metric on, which may
    # come before gunicorn's on_starting hook would create the folder.
    workdir.metrics_dir(replica).mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = gunicorn_argv(bind=replica.endpoint, name=replica.name)
    popen = procs.spawn(
        argv,
        log_path=workdir.log(replica),
        env=environment(workdir, replica, state),
        cwd=workdir.path,
        netns=replica.netns,
    )
    replica.record(popen)


def url(replica: Proc, path: str = "") -> str:
    return f"http://{replica.endpoint}{path}"


def is_ready(replica: Proc) -> bool:
    """Whether the replica answers /readyz (it runs, is not frozen, and reaches Redis)."""
    return replica.alive() and not replica.frozen() and procs.http_ok(url(replica, "/readyz"))


def wait_ready(workdir: Workdir, replica: Proc) -> None:
    """Until the replica answers /readyz; ClusterError with its log's tail if it exits."""
    log = workdir.log(replica)

    def ready() -> bool:
        if not procs.pid_alive(replica.pid):
            raise ClusterError(f"{replica.name} exited at start; see {log}:\n{procs.tail(log)}")
        return procs.http_ok(url(replica, "/readyz"))

    procs.wait_for(ready, f"{replica.name} to answer /readyz (log: {log})")
