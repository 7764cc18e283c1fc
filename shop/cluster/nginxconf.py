"""Render the load balancer's configuration from its one template.

The template (`nginx.conf.j2`, beside this module so an installed launcher finds
it) is rendered twice: for the local launcher, with explicit loopback ports and
every file inside the workdir, and for Docker Compose, where the scaled `shop`
service is found through Docker's DNS. The Docker rendering is committed as
`nginx/docker.conf`; re-render it with `python -m shop.cluster.nginxconf docker`.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).resolve().parent
TEMPLATE_NAME = "nginx.conf.j2"
# The shop's static files, served by nginx itself (shop/cluster/../static).
STATIC_ROOT = TEMPLATE_DIR.parent / "static"
HEALTH_PATH = "/nginx-health"
# nginx's stub_status, reachable from loopback only.
STATUS_PATH = "/nginx-status"

# Docker Compose: the service name, the port gunicorn binds in the image, and
# where docker-compose.yml mounts the static files into the nginx container.
DOCKER_SHOP_SERVICE = "shop:8000"
DOCKER_STATIC_ROOT = "/srv/shop/static"
DOCKER_LISTEN = "8080"
DOCKER_RESOLVER = "127.0.0.11"


@dataclass(frozen=True)
class NginxSettings:
    """Everything the template varies on; the field names are the template's variables."""

    target: str
    standalone: bool
    listen: str
    servers: Sequence[str]
    static_root: str
    access_log: str
    resolve: bool = False
    resolver: str | None = None
    health_path: str = HEALTH_PATH
    status_path: str = STATUS_PATH
    prefix: str = ""
    error_log: str = ""
    run_as_user: str | None = None
    worker_processes: int = 2


def _environment() -> jinja2.Environment:
    # An nginx config is not HTML: autoescaping would corrupt quotes and '&'.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=False,  # noqa: S701
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def render(settings: NginxSettings) -> str:
    """The configuration text for `settings`."""
    return _environment().get_template(TEMPLATE_NAME).render(**asdict(settings))


def local_settings(
    *, prefix: Path, port: int, replica_ports: Sequence[int], log_dir: Path
) -> NginxSettings:
    """Settings for a non-root nginx on loopback whose files all stay under `prefix`."""
    if not replica_ports:
        raise ValueError("nginx needs at least one replica")
    return NginxSettings(
        target="local",
        standalone=True,
        listen=f"127.0.0.1:{port}",
        servers=[f"127.0.0.1:{p}" for p in replica_ports],
        static_root=str(STATIC_ROOT),
        access_log=str(log_dir / "nginx-access.log"),
        prefix=str(prefix),
        error_log=str(log_dir / "nginx-error.log"),
        # Only meaningful when the master runs as root: keep the workers as
        # the same user, who owns the workdir.
        run_as_user=pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None,
    )


def docker_settings() -> NginxSettings:
    """Settings for the official nginx image in docker-compose.yml (an http-context include)."""
    return NginxSettings(
        target="docker",
        standalone=False,
        listen=DOCKER_LISTEN,
        servers=[DOCKER_SHOP_SERVICE],
        static_root=DOCKER_STATIC_ROOT,
        access_log="/dev/stdout",
        resolve=True,
        resolver=DOCKER_RESOLVER,
    )


def render_local(*, prefix: Path, port: int, replica_ports: Sequence[int], log_dir: Path) -> str:
    """The launcher's nginx.conf."""
    return render(
        local_settings(prefix=prefix, port=port, replica_ports=replica_ports, log_dir=log_dir)
    )


def render_docker() -> str:
    """The text committed as nginx/docker.conf."""
    return render(docker_settings())


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m shop.cluster.nginxconf docker` prints the Docker rendering."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["docker"]:
        print("usage: python -m shop.cluster.nginxconf docker > nginx/docker.conf", file=sys.stderr)
        return 2
    sys.stdout.write(render_docker())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
