"""The Kubernetes manifests (deploy/k8s), validated offline: no cluster runs here.

`kubectl kustomize` renders every overlay; kubernetes-validate checks every
object against the API schemas of a pinned Kubernetes version, strictly
(unknown fields are errors); tests/k8s_support.py checks what a schema cannot
see (selectors, ports, probes, grace periods, budgets, the autoscaler,
security, environment, references, network policies); and broken copies
show that those checks catch what they are for. nginx's configuration is the
template's own rendering, checked by a real nginx.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import k8s_support as k8s
import kubernetes_validate
import pytest
import requests
import yaml
from test_nginx_config import EchoHandler, nginx_argv, nginx_test

from sessionstore import parse_sentinel_url
from shop.cluster import ha, nginxconf, procs
from shop.cluster.ha import DEFAULT_ACKS as HA_ACKS

pytestmark = pytest.mark.static

# The API version every object is validated against: the version of the
# kubectl on these machines, and the oldest the manifests need (the preStop
# `sleep` action is on by default from 1.30).
KUBERNETES_VERSION = "1.32"
NGINX_CONF = k8s.K8S_DIR / "base" / "nginx.conf"


def kubectl_or_skip() -> None:
    if k8s.kubectl_binary() is None:
        reason = (
            "kubectl is not installed, so deploy/k8s cannot be rendered: install kubectl "
            "1.27+ (it bundles kustomize) to run the Kubernetes manifest tests"
        )
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with placeholder secrets (the real ones are never committed)."""
    kubectl_or_skip()
    return k8s.copy_tree(tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[k8s.Obj]]:
    return {name: k8s.kustomize(tree / "overlays" / name) for name in k8s.OVERLAYS}


def kinds(objects: list[k8s.Obj]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for obj in objects:
        counted[obj["kind"]] = counted.get(obj["kind"], 0) + 1
    return counted


def env_of(objects: list[k8s.Obj], workload: str, container: str) -> dict[str, str]:
    (found,) = [
        c
        for w in k8s.workloads(objects)
        if w["metadata"]["name"] == workload
        for c in k8s.containers(w)
        if c["name"] == container
    ]
    return {v["name"]: v.get("value") for v in found.get("env", [])}


def config_map_env(objects: list[k8s.Obj], container: k8s.Obj) -> dict[str, str]:
    """What the container's envFrom ConfigMaps put in its environment."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(k8s.find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    return env


def redis_node_container(objects: list[k8s.Obj]) -> k8s.Obj:
    (node,) = [c for c in k8s.containers(k8s.find(objects, "StatefulSet", "redis"))
               if c["name"] == "redis"]  # fmt: skip
    return node


def ha_start_script(objects: list[k8s.Obj]) -> str:
    (script,) = [
        c["data"]["redis-ha.sh"]
        for c in k8s.of_kind(objects, "ConfigMap")
        if "redis-ha.sh" in c.get("data", {})
    ]
    return script


# ------------------------------------------------------------------ rendering
@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_overlay_renders(rendered: dict[str, list[k8s.Obj]], overlay: str) -> None:
    counted = kinds(rendered[overlay])
    print(f"{overlay}: {sum(counted.values())} objects {counted}")
    assert counted["Namespace"] == 1
    assert counted["Deployment"] == 2  # shop, nginx
    assert counted["StatefulSet"] == 1  # redis
    assert counted["HorizontalPodAutoscaler"] == 1
    assert counted["Secret"] == 1
    assert counted["NetworkPolicy"] == 4


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_object_passes_strict_schema_validation(
    rendered: dict[str, list[k8s.Obj]], overlay: str
) -> None:
    assert KUBERNETES_VERSION in {
        ".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()
    }, f"this kubernetes-validate has no schemas for {KUBERNETES_VERSION}"
    failures = []
    for obj in rendered[overlay]:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{k8s.name_of(obj)}: {exc.message} at {list(exc.path)}")
    assert not failures


def test_strict_schema_validation_refuses_an_unknown_field(
    rendered: dict[str, list[k8s.Obj]],
) -> None:
    """The validator bites: a misspelt field (a typo kubectl apply would drop) is refused."""
    broken = yaml.safe_load(yaml.safe_dump(k8s.find(rendered["dev"], "Deployment", "shop")))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriod"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_overlay_passes_the_checks_a_schema_cannot_make(
    rendered: dict[str, list[k8s.Obj]], overlay: str
) -> None:
    assert k8s.problems(rendered[overlay]) == []


# ------------------------------------------------------------------- secrets
def test_no_secret_has_a_committed_value(tmp_path: Path) -> None:
    """The secretGenerator reads secrets.env, which git ignores; without it nothing renders."""
    kubectl_or_skip()
    committed = subprocess.run(
        ["git", "ls-files", "deploy/k8s"], cwd=k8s.REPO, capture_output=True, text=True, timeout=30
    ).stdout.split()
    assert committed, "git ls-files found no deploy/k8s files"
    assert not [f for f in committed if f.endswith("secrets.env")]
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/k8s/base/secrets.env"], cwd=k8s.REPO, timeout=30
    )
    assert ignored.returncode == 0, ".gitignore must cover deploy/k8s/base/secrets.env"
    bare = tmp_path / "k8s"
    shutil.copytree(k8s.K8S_DIR, bare, ignore=shutil.ignore_patterns("secrets.env"))
    with pytest.raises(k8s.KustomizeError, match="secrets.env"):
        k8s.kustomize(bare / "overlays" / "dev")


def test_the_secret_holds_exactly_what_the_pods_read(rendered: dict[str, list[k8s.Obj]]) -> None:
    for objects in rendered.values():
        (secret,) = k8s.of_kind(objects, "Secret")
        assert set(secret["data"]) == set(k8s.PLACEHOLDER_SECRETS)
        assert secret["metadata"]["name"].startswith("shop-secrets-")  # content hash: rolls pods


# ------------------------------------------------------------------ topology
def test_dev_runs_one_redis_and_the_shop_uses_it(rendered: dict[str, list[k8s.Obj]]) -> None:
    objects = rendered["dev"]
    redis = k8s.find(objects, "StatefulSet", "redis")
    assert redis["spec"]["replicas"] == 1
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[2:6] == ["--appendonly", "yes", "--appendfsync", "everysec"]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    env = env_of(objects, "shop", "shop")
    assert env["REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0"
    assert "SHOP_REPLICA_ACKS" not in env  # nothing to acknowledge with no replica
    # Nor a write guard: with min-replicas-to-write 1 the lone Redis would refuse every write.
    node = redis_node_container(objects)
    assert node["command"] == ["redis-server"]
    assert not [a for a in node["args"] if a.startswith("--min-replicas")]
    assert "REDIS_MIN_REPLICAS_TO_WRITE" not in config_map_env(objects, node)


def test_ha_runs_a_primary_two_replicas_and_three_sentinels_as_the_launcher_does(
    rendered: dict[str, list[k8s.Obj]],
) -> None:
    objects = rendered["ha"]
    redis = k8s.find(objects, "StatefulSet", "redis")
    pods = redis["spec"]["replicas"]
    assert pods == 3  # a primary and two replicas: one node lost leaves a replica to ack
    assert {c["name"] for c in k8s.containers(redis)} == {"redis", "sentinel"}
    (settings,) = [
        c
        for c in k8s.of_kind(objects, "ConfigMap")
        if c["metadata"]["name"].startswith("redis-ha-") and "REDIS_NODES" in c.get("data", {})
    ]
    data = settings["data"]
    nodes = data["REDIS_NODES"].split()
    assert nodes == [f"redis-{i}.{data['REDIS_SERVICE']}" for i in range(pods)]
    quorum = int(data["SENTINEL_QUORUM"])
    assert quorum == 2
    assert pods // 2 < quorum <= pods - 1  # a majority, and still reached with one node gone
    # The shop asks exactly these Sentinels for exactly this primary...
    env = env_of(objects, "shop", "shop")
    sentinels, service, db, password = parse_sentinel_url(
        env["REDIS_URL"].replace("$(REDIS_PASSWORD)", "pw")
    )
    assert [host for host, _ in sentinels] == nodes
    assert {port for _, port in sentinels} == {26379}
    assert (service, db, password) == (data["REDIS_MASTER_NAME"], 0, "pw")
    # ...and waits for a replica as `shop-cluster up --redis ha` does.
    assert {name: env[name] for name in HA_ACKS} == HA_ACKS
    # One Redis pod per node, and a drain takes one at a time.
    anti = redis["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == (
        "kubernetes.io/hostname"
    )
    assert k8s.find(objects, "PodDisruptionBudget", "redis")["spec"]["maxUnavailable"] == 1


def test_ha_redis_nodes_refuse_writes_no_replica_can_acknowledge_as_the_launcher_does(
    rendered: dict[str, list[k8s.Obj]],
) -> None:
    """Every ha node runs with Redis's write guard at `--redis ha`'s values (any node
    may become primary), asking exactly what the shop's WAIT asks. That redis-ha.sh
    hands them to the running redis-server is shown by tests/test_k8s_redis_ha.py."""
    objects = rendered["ha"]
    node = redis_node_container(objects)
    settings = config_map_env(objects, node)
    guard = {
        "min-replicas-to-write": settings.get("REDIS_MIN_REPLICAS_TO_WRITE"),
        "min-replicas-max-lag": settings.get("REDIS_MIN_REPLICAS_MAX_LAG"),
    }
    assert guard == {
        name: value for name, value in ha.NODE_SETTINGS.items() if name.startswith("min-replicas")
    }
    script = ha_start_script(objects)
    assert '--min-replicas-to-write "$REDIS_MIN_REPLICAS_TO_WRITE"' in script
    assert '--min-replicas-max-lag "$REDIS_MIN_REPLICAS_MAX_LAG"' in script
    # The guard asks what WAIT asks: it refuses no write WAIT would let through...
    env = env_of(objects, "shop", "shop")
    assert {int(env[name]) for name in HA_ACKS} == {int(guard["min-replicas-to-write"])}
    # ...and with one node lost, enough replicas are left to satisfy both.
    replicas = k8s.find(objects, "StatefulSet", "redis")["spec"]["replicas"] - 1
    assert 1 <= int(guard["min-replicas-to-write"]) <= replicas - 1


def test_ha_start_script_is_valid_shell(rendered: dict[str, list[k8s.Obj]]) -> None:
    result = subprocess.run(
        ["sh", "-n"],
        input=ha_start_script(rendered["ha"]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_only_nginx_reaches_the_shop_and_only_the_shop_reaches_redis(
    rendered: dict[str, list[k8s.Obj]], overlay: str
) -> None:
    reach = k8s.reachability(rendered[overlay])
    print(overlay, {f"{w}:{p}": sorted(s) for (w, p), s in reach.items()})
    assert reach[("nginx", "http")] == {k8s.ANYONE}
    assert reach[("shop", "http")] == {"nginx"}
    # In ha the Redis pods also replicate from, and gossip with, each other.
    peers = {"shop"} if overlay == "dev" else {"shop", "redis"}
    assert {port: sources for (w, port), sources in reach.items() if w == "redis"} == {
        port: peers for port in (["redis"] if overlay == "dev" else ["redis", "sentinel"])
    }


def test_the_shop_image_is_tagged_with_the_project_version(
    rendered: dict[str, list[k8s.Obj]],
) -> None:
    import tomllib

    version = tomllib.loads((k8s.REPO / "pyproject.toml").read_text())["project"]["version"]
    images = {
        c["image"]
        for objects in rendered.values()
        for w in k8s.workloads(objects)
        for c in k8s.containers(w)
        if c["image"].startswith(k8s.SHOP_IMAGE)
    }
    assert images == {f"{k8s.SHOP_IMAGE}:{version}"}


# ------------------------------------------------- broken copies get caught
def break_file(tree: Path, relative: str, old: str, new: str) -> None:
    path = tree / relative
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not found once in {relative}"
    path.write_text(text.replace(old, new))


SERVICE_SELECTOR = """  selector:
    app.kubernetes.io/name: shop
  ports:"""
READINESS_PROBE = """          readinessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 3
"""


@pytest.mark.parametrize(
    ("what", "relative", "old", "new", "expected"),
    [
        (
            "a Service selector with a typo",
            "base/shop.yaml",
            SERVICE_SELECTOR,
            SERVICE_SELECTOR.replace("name: shop", "name: shopp"),
            "Service shop: its selector matches no pod",
        ),
        (
            "the shop's readiness probe left out",
            "base/shop.yaml",
            READINESS_PROBE,
            "",
            "Deployment shop container shop: no readinessProbe",
        ),
        (
            "a grace period shorter than preStop + gunicorn's drain",
            "base/shop.yaml",
            "terminationGracePeriodSeconds: 45",
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds 30 is not longer than preStop 5 s + gunicorn graceful",
        ),
    ],
)
def test_a_broken_copy_is_caught(
    tmp_path: Path, what: str, relative: str, old: str, new: str, expected: str
) -> None:
    kubectl_or_skip()
    tree = k8s.copy_tree(tmp_path)
    break_file(tree, relative, old, new)
    for overlay in k8s.OVERLAYS:
        found = k8s.problems(k8s.kustomize(tree / "overlays" / overlay))
        print(f"{what} ({overlay}): {found}")
        assert any(expected in problem for problem in found), found


def _shop(objects: list[k8s.Obj]) -> k8s.Obj:
    return k8s.find(objects, "Deployment", "shop")


def _shop_container(objects: list[k8s.Obj]) -> k8s.Obj:
    return _shop(objects)["spec"]["template"]["spec"]["containers"][0]


def _set_env(objects: list[k8s.Obj], name: str, value: str) -> None:
    env = _shop_container(objects)["env"]
    env[:] = [v for v in env if v["name"] != name] + [{"name": name, "value": value}]


def _env_var(objects: list[k8s.Obj], name: str) -> k8s.Obj:
    return next(v for v in _shop_container(objects)["env"] if v["name"] == name)


def _budget_of_all(objects: list[k8s.Obj]) -> None:
    spec = k8s.find(objects, "PodDisruptionBudget", "shop")["spec"]
    del spec["maxUnavailable"]
    spec["minAvailable"] = k8s.find(objects, "HorizontalPodAutoscaler", "shop")["spec"][
        "minReplicas"
    ]


BREAKAGES: dict[str, tuple[Callable[[list[k8s.Obj]], None], str]] = {
    "a probe on a path the app does not serve": (
        lambda o: _shop_container(o)["readinessProbe"]["httpGet"].update(path="/ready"),
        "readinessProbe path /ready is not served by the app",
    ),
    "liveness on /readyz (a Redis outage would restart every pod)": (
        lambda o: _shop_container(o)["livenessProbe"]["httpGet"].update(path="/readyz"),
        "livenessProbe must GET /healthz, not /readyz",
    ),
    "readiness on /readyz (a Redis outage would empty the Service)": (
        lambda o: _shop_container(o)["readinessProbe"]["httpGet"].update(path="/readyz"),
        "readinessProbe must GET /healthz, not /readyz",
    ),
    "a targetPort that names no container port": (
        lambda o: k8s.find(o, "Service", "shop")["spec"]["ports"][0].update(targetPort="web"),
        "targetPort 'web' is no container port",
    ),
    "a numeric targetPort": (
        lambda o: k8s.find(o, "Service", "nginx")["spec"]["ports"][0].update(targetPort=8080),
        "targetPort 8080 is a number",
    ),
    "a container as root": (
        lambda o: _shop_container(o)["securityContext"].update(runAsUser=0),
        "runs as root (runAsUser 0)",
    ),
    "a writable root filesystem": (
        lambda o: _shop_container(o)["securityContext"].update(readOnlyRootFilesystem=False),
        "the root filesystem is writable",
    ),
    "no preStop pause": (
        lambda o: _shop_container(o).pop("lifecycle"),
        "no preStop pause",
    ),
    "SHOP_GRACEFUL_TIMEOUT raised past the grace period": (
        lambda o: _set_env(o, "SHOP_GRACEFUL_TIMEOUT", "60"),
        "gunicorn graceful timeout 60 s",
    ),
    "a misspelt environment variable": (
        lambda o: _set_env(o, "SHOP_REPLICA_ACK", "1"),
        "sets SHOP_REPLICA_ACK, which shop/config.py does not read",
    ),
    "an environment value the shop refuses": (
        lambda o: _set_env(o, "SHOP_LOGIN_WINDOW", "5m"),
        "SHOP_LOGIN_WINDOW must be an integer",
    ),
    "gunicorn bound to a port the container does not declare": (
        lambda o: _set_env(o, "SHOP_BIND", "0.0.0.0:9000"),
        "gunicorn binds ['0.0.0.0:9000']",
    ),
    "a budget that allows no eviction": (
        _budget_of_all,
        "allows no disruption",
    ),
    "an autoscaler aimed at a missing Deployment": (
        lambda o: k8s.find(o, "HorizontalPodAutoscaler", "shop")["spec"]["scaleTargetRef"].update(
            name="shop-web"
        ),
        "is not a Deployment here",
    ),
    "an autoscaler fought by a replicas field": (
        lambda o: _shop(o)["spec"].update(replicas=3),
        "sets replicas, which every apply resets",
    ),
    "no memory limit": (
        lambda o: _shop_container(o)["resources"]["limits"].pop("memory"),
        "no limits for ['memory']",
    ),
    "a Secret key nobody generates": (
        lambda o: _env_var(o, "SECRET_KEY")["valueFrom"]["secretKeyRef"].update(key="SECRET"),
        "key SECRET, which is not there",
    ),
}


@pytest.mark.parametrize("what", sorted(BREAKAGES))
def test_a_broken_object_is_caught(rendered: dict[str, list[k8s.Obj]], what: str) -> None:
    objects = yaml.safe_load(yaml.safe_dump(rendered["ha"]))  # a deep copy
    assert k8s.problems(objects) == []
    breakage, expected = BREAKAGES[what]
    breakage(objects)
    found = k8s.problems(objects)
    print(f"{what}: {found}")
    assert any(expected in problem for problem in found), found


def test_a_network_policy_letting_everyone_reach_redis_is_seen(
    rendered: dict[str, list[k8s.Obj]],
) -> None:
    objects = yaml.safe_load(yaml.safe_dump(rendered["dev"]))
    k8s.find(objects, "NetworkPolicy", "redis-from-shop")["spec"]["ingress"][0].pop("from")
    assert k8s.reachability(objects)[("redis", "redis")] == {k8s.ANYONE}


# --------------------------------------------------------------------- nginx
def test_committed_kubernetes_nginx_conf_is_a_fresh_render() -> None:
    assert NGINX_CONF.read_text() == nginxconf.render_kubernetes(), (
        "deploy/k8s/base/nginx.conf is stale: "
        "python -m shop.cluster.nginxconf kubernetes > deploy/k8s/base/nginx.conf"
    )


def test_kubernetes_rendering_keeps_the_retry_rules_and_never_marks_the_service_down() -> None:
    text = NGINX_CONF.read_text()
    tries = int(re.search(r"proxy_next_upstream_tries (\d+);", text).group(1))
    service = re.escape(nginxconf.K8S_SHOP_SERVICE)
    # One entry per try, each never marked failed: a retry is a new attempt
    # through kube-proxy, not a "no live upstreams" 502.
    assert len(re.findall(rf"^\s*server {service} max_fails=0;$", text, re.MULTILINE)) == tries
    assert "resolve" not in re.findall(r"^\s*server .*$", text, re.MULTILINE)[0]
    for directive in (
        "proxy_next_upstream error timeout http_502 non_idempotent;",
        "proxy_set_header Idempotency-Key $shop_idempotency_key;",
    ):
        assert directive in text
        assert directive in nginxconf.render_docker()


def local_copy_of_k8s_conf(tmp_path: Path, shop_port: int, listen_port: int) -> Path:
    """The committed Kubernetes nginx.conf with only its pod paths and names moved to tmp_path
    and loopback: the Service name to 127.0.0.1:shop_port, the emptyDirs to tmp_path, the
    listen port to a free one. Nothing else changes."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    text = NGINX_CONF.read_text()
    replacements = {
        nginxconf.K8S_PREFIX: str(tmp_path),
        f"server {nginxconf.K8S_SHOP_SERVICE} ": f"server {procs.LOOPBACK}:{shop_port} ",
        f"listen {nginxconf.K8S_LISTEN};": f"listen {procs.LOOPBACK}:{listen_port};",
        "access_log /dev/stdout": f"access_log {tmp_path}/access.log",
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return conf


def test_kubernetes_rendering_passes_nginx_t(tmp_path: Path) -> None:
    nginx_test(tmp_path, local_copy_of_k8s_conf(tmp_path, 18000, procs.free_port()))


class OnePodDeadProxy:
    """kube-proxy in miniature: one address in front of several "pods", each new
    connection handed to the next pod in turn. The first pod is dead: its
    connections are closed at once, as a crashed pod's are before its endpoint is
    withdrawn."""

    def __init__(self, live_ports: list[int]) -> None:
        self.pods: list[int | None] = [None, *live_ports]
        self.listener = socket.create_server((procs.LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            pod = self.pods[self.connections % len(self.pods)]
            self.connections += 1
            if pod is None:
                client.close()
                continue
            upstream = socket.create_connection((procs.LOOPBACK, pod), timeout=5)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(30)
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def k8s_nginx_before_a_dead_pod(tmp_path: Path) -> Iterator[tuple[str, Path, OnePodDeadProxy]]:
    from http.server import ThreadingHTTPServer

    echo = ThreadingHTTPServer((procs.LOOPBACK, 0), EchoHandler)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    proxy = OnePodDeadProxy([echo.server_address[1]])
    port = procs.free_port()
    conf = local_copy_of_k8s_conf(tmp_path, proxy.port, port)
    nginx = procs.spawn(nginx_argv(tmp_path, conf), log_path=tmp_path / "nginx.out")
    try:
        procs.wait_until(lambda: procs.port_is_open(port), timeout=15, what="nginx")
        yield f"http://{procs.LOOPBACK}:{port}", tmp_path / "access.log", proxy
    finally:
        procs.stop_process(nginx.pid, timeout=10)
        proxy.close()
        echo.shutdown()
        echo.server_close()


def test_a_post_that_lands_on_a_dead_pod_is_retried_through_the_service(
    k8s_nginx_before_a_dead_pod: tuple[str, Path, OnePodDeadProxy],
) -> None:
    """The Kubernetes upstream still retries: an attempt on a dead pod fails, the
    retry opens another connection through the Service, lands on a live pod,
    and carries the same Idempotency-Key. And the Service is never marked down."""
    url, access_log, proxy = k8s_nginx_before_a_dead_pod
    with requests.Session() as http:
        answers = [
            http.post(f"{url}/api/cart/items", json={"qty": 1}, timeout=10) for _ in range(6)
        ]
    assert [a.status_code for a in answers] == [200] * 6
    assert all(a.json()["idempotency-key"] == a.headers["X-Request-ID"] for a in answers)
    procs.wait_until(lambda: access_log.stat().st_size > 0, timeout=5, what="access log")
    log = access_log.read_text()
    service = f"{procs.LOOPBACK}:{proxy.port}"
    print(log)
    # The first connection went to the dead pod: nginx retried on the next entry.
    assert f"upstream={service}, {service} ustatus=502, 200" in log
