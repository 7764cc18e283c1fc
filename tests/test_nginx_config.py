"""The load balancer's configuration: both renderings pass `nginx -t`, the
committed Docker rendering is fresh, and a real nginx started from the local
rendering retries a dead replica, stamps an Idempotency-Key on requests, gives
up on a hung replica after its bounded read timeout, and sends a replica the
watchdog took out nothing while one in rotation answers."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from shop.cluster import nginxconf, procs

pytestmark = pytest.mark.static

REPO = Path(__file__).resolve().parents[1]
DOCKER_CONF = REPO / "nginx" / "docker.conf"


def nginx_binary() -> str:
    try:
        return procs.find_binary("nginx")
    except procs.MissingBinary as exc:
        pytest.skip(str(exc))


def nginx_argv(prefix: Path, conf: Path) -> list[str]:
    nginx_binary()  # skips the test when nginx is missing
    return nginxconf.argv(prefix=prefix, conf=conf, error_log=prefix / "error.log")


def nginx_test(prefix: Path, conf: Path) -> None:
    result = subprocess.run(
        [*nginx_argv(prefix, conf), "-t"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def local_conf(tmp_path: Path, replica_ports: list[int], port: int | None = None) -> Path:
    """The launcher's rendering in `tmp_path`, with the folders the launcher makes."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    (tmp_path / "logs").mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        nginxconf.render_local(
            prefix=tmp_path,
            listen=f"{procs.LOOPBACK}:{port or procs.free_port()}",
            servers=[f"{procs.LOOPBACK}:{p}" for p in replica_ports],
            log_dir=tmp_path / "logs",
        )
    )
    return conf


def test_local_rendering_passes_nginx_t(tmp_path: Path) -> None:
    nginx_test(tmp_path, local_conf(tmp_path, [18001, 18002, 18003]))


def test_the_sticky_rendering_hashes_each_client_by_a_route_cookie(tmp_path: Path) -> None:
    """Only for replicas that keep state in memory (`up --state memory`): a cookie
    of nginx's own, set on the first response, routes a client to one replica."""
    (tmp_path / "tmp").mkdir()
    sticky = tmp_path / "nginx.conf"
    sticky.write_text(
        nginxconf.render_local(
            prefix=tmp_path,
            listen=f"{procs.LOOPBACK}:{procs.free_port()}",
            servers=[f"{procs.LOOPBACK}:{p}" for p in (18001, 18002)],
            log_dir=tmp_path,
            sticky=True,
        )
    )
    text = sticky.read_text()
    assert "hash $shop_route consistent;" in text
    assert "add_header Set-Cookie $shop_route_cookie always;" in text
    nginx_test(tmp_path, sticky)
    plain = local_conf(tmp_path, [18001, 18002]).read_text()
    for rendering in (plain, nginxconf.render_docker(), nginxconf.render_kubernetes()):
        assert "shop_route" not in rendering
        assert not re.search(r"^\s*(hash|ip_hash)\b", rendering, re.MULTILINE)


def test_committed_docker_config_is_a_fresh_render() -> None:
    assert DOCKER_CONF.read_text() == nginxconf.render_docker(), (
        "nginx/docker.conf is stale: python -m shop.cluster.nginxconf docker > nginx/docker.conf"
    )


def test_docker_rendering_passes_nginx_t(tmp_path: Path) -> None:
    """The committed file is an http-context include of the nginx image's
    nginx.conf, so it is wrapped here in a minimal main context with every
    writable path in tmp_path, as the image's own nginx.conf would wrap it.

    nginx resolves the `shop` service name when it loads the file (in Docker,
    through Docker's DNS, to every replica). Here no such name exists, so it is
    mapped to 127.0.0.1, as /etc/hosts would do (we may not edit it). Nothing
    else is changed: the file needs nothing newer than Debian's nginx 1.22.
    """
    text = DOCKER_CONF.read_text()
    service_host = nginxconf.DOCKER_SHOP_SERVICE.split(":")[0]
    mapped = re.sub(
        rf"^(\s*server\s+){service_host}(:\d+\s)", r"\g<1>127.0.0.1\g<2>", text, flags=re.MULTILINE
    )
    assert mapped != text, "the upstream server line was not found"
    text = mapped
    include = tmp_path / "default.conf"
    include.write_text(text)
    wrapper = tmp_path / "nginx.conf"
    temp_paths = "".join(
        f"    {kind}_temp_path {tmp_path}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    wrapper.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n{temp_paths}    include {include};\n}}\n"
    )
    nginx_test(tmp_path, wrapper)


@pytest.mark.parametrize("target", ["local", "docker"])
def test_renderings_keep_the_directives_the_failure_semantics_rest_on(target: str) -> None:
    if target == "docker":
        text = nginxconf.render_docker()
    else:
        text = nginxconf.render_local(
            prefix=Path("/w"),
            listen="127.0.0.1:8080",
            servers=["127.0.0.1:1", "127.0.0.1:2"],
            log_dir=Path("/w/logs"),
        )
    required = [
        r"zone shop_upstream",
        r"keepalive \d+;",
        r"proxy_http_version 1\.1;",
        r'proxy_set_header Connection "";',
        r"proxy_next_upstream error timeout http_502 non_idempotent;",
        r"proxy_next_upstream_tries \d+;",
        r"proxy_next_upstream_timeout 5s;",
        r"proxy_connect_timeout 1s;",
        r"proxy_send_timeout 3s;",
        r"proxy_read_timeout 3s;",
        r"location ~ \^/\(api/\)\?\(login\|register\)\$ \{\s+proxy_pass http://shop;"
        r"\s+proxy_read_timeout 6s;\s+proxy_next_upstream_timeout 8s;",
        r"max_fails=\d+ fail_timeout=\d+s",
        r"proxy_set_header Idempotency-Key \$shop_idempotency_key;",
        r'""\s+\$request_id;',
        r"proxy_set_header X-Request-ID \$request_id;",
        r"proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;",
        r"proxy_set_header X-Forwarded-Proto \$scheme;",
        r"upstream=\$upstream_addr ustatus=\$upstream_status",
        r"client_max_body_size \d+k;",
        r"location /static/",
        rf"location = {nginxconf.HEALTH_PATH}",
    ]
    missing = [pattern for pattern in required if not re.search(pattern, text)]
    assert not missing
    if target == "docker":
        # One server line for the whole service: nginx makes a peer of each replica.
        assert re.search(r"server shop:8000 max_fails=", text)
        # `--scale` may stop several replicas at once, undrained: a request may
        # try every replica (once each), within the 10 s bound.
        assert "proxy_next_upstream_tries 0;" in text
    else:
        assert "listen 127.0.0.1:8080;" in text
        assert "proxy_next_upstream_tries 3;" in text  # the launcher drains first
    # Neither needs nginx 1.27.3+: Debian's 1.22 runs both.
    assert not re.search(r"server \S+ resolve", text)
    assert "resolver " not in text


# ----------------------------------------------------- a real nginx, real retries
class EchoHandler(BaseHTTPRequestHandler):
    """A stand-in replica that answers with the headers it received."""

    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream keepalive expects

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _echo

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def nginx_with_a_dead_replica(tmp_path: Path) -> Iterator[tuple[str, Path, int, int]]:
    """nginx in front of a dead port and a live echo server: (url, access log, dead, live)."""
    echo = ThreadingHTTPServer((procs.LOOPBACK, 0), EchoHandler)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    live, dead, port = echo.server_address[1], procs.free_port(), procs.free_port()
    conf = local_conf(tmp_path, [dead, live], port)
    proc = procs.spawn(nginx_argv(tmp_path, conf), log_path=tmp_path / "nginx.out")
    try:
        procs.wait_until(lambda: procs.port_is_open(port), timeout=15, what="nginx")
        yield f"http://{procs.LOOPBACK}:{port}", tmp_path / "logs" / "nginx-access.log", dead, live
    finally:
        procs.stop_process(proc.pid, timeout=10)
        echo.shutdown()
        echo.server_close()


def test_nginx_retries_a_post_on_the_next_replica_with_one_idempotency_key(
    nginx_with_a_dead_replica: tuple[str, Path, int, int],
) -> None:
    url, access_log, dead, live = nginx_with_a_dead_replica
    with requests.Session() as http:
        seen = []
        for _ in range(4):
            response = http.post(f"{url}/api/cart/items", json={"qty": 1}, timeout=10)
            assert response.status_code == 200
            seen.append(response.json())
        own = http.post(
            f"{url}/api/cart/items", json={}, headers={"Idempotency-Key": "mine"}, timeout=10
        ).json()
        assert http.get(f"{url}{nginxconf.HEALTH_PATH}", timeout=5).text == "ok\n"
    # nginx made up a key from the request id when the client sent none...
    assert all(h["idempotency-key"] == h["x-request-id"] for h in seen)
    assert len({h["idempotency-key"] for h in seen}) == 4
    # ...and kept the client's own.
    assert own["idempotency-key"] == "mine"
    assert own["x-forwarded-for"] == procs.LOOPBACK
    assert own.get("connection", "").lower() != "close"  # upstream keep-alive
    # The POST that hit the dead replica first was retried on the live one;
    # the access log shows both upstreams tried.
    procs.wait_until(lambda: access_log.stat().st_size > 0, timeout=5, what="access log")
    log = access_log.read_text()
    assert f"upstream=127.0.0.1:{dead}, 127.0.0.1:{live} ustatus=502, 200" in log


# ----------------------------------------------- what nginx answers by itself
@pytest.fixture
def nginx_in_front_of(tmp_path: Path) -> Iterator[object]:
    """Start nginx (the local rendering) in front of the given ports; stopped by pid."""
    started = []

    def start(replica_ports: list[int]) -> str:
        port = procs.free_port()
        conf = local_conf(tmp_path, replica_ports, port)
        started.append(procs.spawn(nginx_argv(tmp_path, conf), log_path=tmp_path / "nginx.out"))
        procs.wait_until(lambda: procs.port_is_open(port), timeout=15, what="nginx")
        return f"http://{procs.LOOPBACK}:{port}"

    try:
        yield start
    finally:
        for proc in started:
            procs.stop_process(proc.pid, timeout=10)


@pytest.fixture
def echo_replica() -> Iterator[int]:
    echo = ThreadingHTTPServer((procs.LOOPBACK, 0), EchoHandler)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    try:
        yield echo.server_address[1]
    finally:
        echo.shutdown()
        echo.server_close()


def assert_shop_error(response: requests.Response, status: int, code: str) -> None:
    """An answer in the shop's JSON error format, stamped with the request id."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == code and body["message"], body
    assert response.headers["X-Request-ID"]


def test_no_replica_answering_is_a_json_503_with_retry_after_on_the_api(nginx_in_front_of):
    url = nginx_in_front_of([procs.free_port(), procs.free_port()])  # nobody listens
    for method, path in [("GET", "/api/cart"), ("POST", "/api/cart/items")]:
        response = requests.request(method, f"{url}{path}", json={}, timeout=15)
        assert_shop_error(response, 503, "service_unavailable")
        assert response.headers["Retry-After"] == "2"
    page = requests.get(f"{url}/cart", timeout=15)  # a page keeps nginx's own answer
    assert page.status_code == 502 and "text/html" in page.headers["Content-Type"]


def test_a_body_over_16_kb_is_refused_by_nginx_in_the_shops_format(nginx_in_front_of, echo_replica):
    url = nginx_in_front_of([echo_replica])
    big = "x" * (16 * 1024 + 1)
    response = requests.post(
        f"{url}/api/cart/items", data=big, timeout=10, headers={"Content-Type": "application/json"}
    )
    assert_shop_error(response, 413, "body_too_large")
    just_fits = requests.post(
        f"{url}/api/cart/items",
        data="x" * 16 * 1024,
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert just_fits.status_code == 200  # the app's own limit (16 KB) decides from here
    form = requests.post(f"{url}/cart/add", data=big, timeout=10)
    assert form.status_code == 413 and "text/html" in form.headers["Content-Type"]


def test_nginx_refusing_a_method_says_which_ones_the_path_takes(nginx_in_front_of, echo_replica):
    url = nginx_in_front_of([echo_replica])
    response = requests.request("TRACE", f"{url}/api/cart/items/house-blend", timeout=10)
    assert_shop_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "DELETE, OPTIONS, PUT"
    assert requests.request("TRACE", f"{url}/api/me", timeout=10).headers["Allow"] == (
        "GET, HEAD, OPTIONS"
    )
    assert_shop_error(requests.request("TRACE", f"{url}/api/nowhere", timeout=10), 404, "not_found")
    page = requests.request("TRACE", f"{url}/cart", timeout=10)
    assert page.status_code == 405 and "Allow" not in page.headers


def test_nginx_names_no_version(nginx_in_front_of, echo_replica):
    url = nginx_in_front_of([echo_replica])
    for path in ["/api/me", nginxconf.HEALTH_PATH, "/static/nowhere.css"]:
        assert requests.get(f"{url}{path}", timeout=10).headers["Server"] == "nginx"


def test_the_allow_table_nginx_uses_is_the_apps_own(shop_app):
    methods: dict[str, set[str]] = {}
    for rule in shop_app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            methods.setdefault(re.sub(r"<[^>]+>", "X", rule.rule), set()).update(rule.methods)
    routes = {path: ", ".join(sorted(names)) for path, names in methods.items()}
    table = {}
    for path, allowed in nginxconf.API_METHODS:
        table[path.replace("~^", "").replace("[^/]+$", "X")] = allowed
    assert table == routes


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A port that accepts connections into its backlog and never answers: what a
    frozen replica (SIGSTOP) or a host that swallows packets looks like to nginx."""
    with socket.socket() as listener:
        listener.bind((procs.LOOPBACK, 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@contextmanager
def running_nginx(tmp_path: Path, settings: nginxconf.NginxSettings) -> Iterator[str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginxconf.render(settings))
    nginx_test(tmp_path, conf)
    proc = procs.spawn(nginx_argv(tmp_path, conf), log_path=tmp_path / "nginx.out")
    try:
        port = int(settings.listen.rsplit(":", 1)[1])
        procs.wait_until(lambda: procs.port_is_open(port), timeout=15, what="nginx")
        yield f"http://{settings.listen}"
    finally:
        procs.stop_process(proc.pid, timeout=10)


def settings_for(tmp_path: Path, ports: list[int]) -> nginxconf.NginxSettings:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return nginxconf.local_settings(
        prefix=tmp_path,
        listen=f"{procs.LOOPBACK}:{procs.free_port()}",
        servers=[f"{procs.LOOPBACK}:{p}" for p in ports],
        log_dir=tmp_path / "logs",
    )


@pytest.mark.parametrize(("path", "bound"), [("/api/cart/items", 3.0), ("/api/login", 6.0)])
def test_a_hung_replica_costs_a_request_the_read_timeout_then_another_answers(
    tmp_path: Path, hung_port: int, echo_replica: int, path: str, bound: float
) -> None:
    # nginx's default is 60 s; a login gets longer than the rest (scrypt is slow).
    with running_nginx(tmp_path, settings_for(tmp_path, [hung_port, echo_replica])) as url:
        timings = []
        for _ in range(2):  # round robin: one of the two meets the hung replica first
            started = time.monotonic()
            response = requests.post(f"{url}{path}", json={}, timeout=30)
            timings.append(time.monotonic() - started)
            assert response.status_code == 200
    print(f"\n{path}: {', '.join(f'{t:.2f}' for t in timings)} s")
    assert bound - 0.2 <= max(timings) <= bound + 1.5


def test_a_server_taken_out_gets_no_request_while_one_in_rotation_answers(
    tmp_path: Path, echo_replica: int
) -> None:
    other = ThreadingHTTPServer((procs.LOOPBACK, 0), EchoHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        settings = settings_for(tmp_path, [echo_replica, other.server_address[1]])
        out = settings.servers[1]
        text = nginxconf.render(replace(settings, down=[out]))
        assert re.search(rf"server {re.escape(out)} max_fails=1 fail_timeout=5s backup;", text)
        assert "failed its readiness probe" in text  # the reason is in the file
        with running_nginx(tmp_path, replace(settings, down=[out])) as url:
            for _ in range(6):
                assert requests.get(f"{url}/api/products", timeout=10).status_code == 200
        log = (tmp_path / "logs" / "nginx-access.log").read_text()
        assert f"upstream={settings.servers[0]} " in log
        assert out not in log
    finally:
        other.shutdown()
        other.server_close()


def test_a_server_taken_out_answers_when_every_one_in_rotation_fails(
    tmp_path: Path, echo_replica: int
) -> None:
    """The watchdog took a slow replica out; the only one left in rotation then
    crashed before the next probe: nginx tries the one taken out, no 502."""
    crashed = procs.free_port()  # nothing listens: connection refused
    settings = settings_for(tmp_path, [crashed, echo_replica])
    out = settings.servers[1]
    with running_nginx(tmp_path, replace(settings, down=[out])) as url:
        for _ in range(4):
            assert requests.get(f"{url}/api/products", timeout=10).status_code == 200
    log = (tmp_path / "logs" / "nginx-access.log").read_text()
    assert f"upstream={out} " in log or f", {out} " in log


def test_with_sticky_routing_a_server_taken_out_is_down(tmp_path: Path) -> None:
    """Hash balancing takes no backup servers: nginx -t would refuse the config."""
    settings = replace(settings_for(tmp_path, [18001, 18002]), sticky=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginxconf.render(replace(settings, down=[settings.servers[1]])))
    assert f"server {settings.servers[1]} max_fails=1 fail_timeout=5s down;" in conf.read_text()
    nginx_test(tmp_path, conf)
