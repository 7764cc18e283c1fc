"""Checks of the Kubernetes manifests (deploy/k8s) that schema validation cannot see.

A JSON schema says a Service may have a selector; it cannot say that the
selector matches a pod, that a probe's path is one the app serves, or that the
grace period outlasts gunicorn's drain. Each `check_*` function below takes the
objects `kubectl kustomize` rendered (plain dicts) and returns the problems it
found, one readable sentence each; `problems()` runs them all. tests/test_k8s.py
runs them on every overlay, and on broken copies to show that they bite.

What the app reads and serves comes from the app itself, never from a list
kept here: the Flask url_map, the names shop/config.py and
shop/gunicorn_conf.py look up, gunicorn's effective settings for a
container's environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
K8S_DIR = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "ha")
# The project's image (Dockerfile); its containers without a `command` run
# the image's CMD, gunicorn with shop/gunicorn_conf.py.
SHOP_IMAGE = "shop-cluster"
# Values the secretGenerator needs to render; never real ones.
PLACEHOLDER_SECRETS = {"SECRET_KEY": "not-a-secret-" + "0" * 32, "REDIS_PASSWORD": "0" * 48}
# Bounds every kubectl and helper process: rendering takes well under a second.
COMMAND_TIMEOUT_S = 60

Obj = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


# ----------------------------------------------------------------- rendering
class KustomizeError(RuntimeError):
    """kubectl kustomize refused a tree; the message is kubectl's."""


def kubectl_binary() -> str | None:
    return shutil.which("kubectl")


def write_placeholder_secrets(k8s_dir: Path) -> None:
    """What a user does once by hand (README: "Beyond one machine"), with dummy values."""
    lines = "".join(f"{key}={value}\n" for key, value in PLACEHOLDER_SECRETS.items())
    (k8s_dir / "base" / "secrets.env").write_text(lines)


def copy_tree(dest: Path) -> Path:
    """A copy of deploy/k8s under `dest`, with placeholder secrets, ready to render or break."""
    tree = dest / "k8s"
    shutil.copytree(K8S_DIR, tree, ignore=shutil.ignore_patterns("secrets.env"))
    write_placeholder_secrets(tree)
    return tree


def kustomize(kustomization_dir: Path) -> list[Obj]:
    """Every object `kubectl kustomize DIR` renders, in order."""
    kubectl = kubectl_binary()
    if kubectl is None:
        raise KustomizeError("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise KustomizeError(result.stderr.strip())
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# ------------------------------------------------------------- object access
def name_of(obj: Obj) -> str:
    return f"{obj['kind']} {obj['metadata']['name']}"


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def find(objects: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in of_kind(objects, kind) if o["metadata"]["name"] == name), None)


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Obj) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def containers(workload: Obj, *, init: bool = True) -> list[Obj]:
    spec = pod_spec(workload)
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", [])) if init else [])


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels form, or a Service's plain map) matches `labels`."""
    if selector is None:
        return False
    match = selector.get("matchLabels", selector) if "matchExpressions" not in selector else None
    if match is None:
        raise NotImplementedError("matchExpressions are not used in deploy/k8s")
    return all(labels.get(k) == v for k, v in match.items())


def selected_workloads(objects: list[Obj], selector: Mapping[str, Any] | None) -> list[Obj]:
    if not selector:
        return []
    return [w for w in workloads(objects) if selects(selector, pod_labels(w))]


def is_gunicorn(container: Obj) -> bool:
    """A container of the project's image that runs its CMD (gunicorn), not a helper command."""
    image = container.get("image", "")
    return image.split("/")[-1].split(":")[0] == SHOP_IMAGE and "command" not in container


def is_nginx(container: Obj) -> bool:
    return container.get("image", "").split("/")[-1].startswith("nginx")


def env_literals(container: Obj) -> dict[str, str]:
    """The container's environment as the process sees it, references filled with placeholders."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            value = var["value"]
            for ref in re.findall(r"\$\((\w+)\)", value):
                value = value.replace(f"$({ref})", env.get(ref, ""))
            env[var["name"]] = value
        else:
            env[var["name"]] = PLACEHOLDER_SECRETS.get(var["name"], "placeholder")
    return env


def container_port_names(workload: Obj) -> set[str]:
    return {
        port["name"]
        for container in containers(workload, init=False)
        for port in container.get("ports", [])
        if "name" in port
    }


def container_port_number(workload: Obj, port: str | int) -> int | None:
    for container in containers(workload, init=False):
        for declared in container.get("ports", []):
            if port in (declared.get("name"), declared["containerPort"]):
                return declared["containerPort"]
    return None


# ---------------------------------------------- what the app and its servers do
@cache
def app_serves() -> Any:
    """A werkzeug MapAdapter over the shop's url_map (the app needs no Redis to be built)."""
    from shop import create_app

    app = create_app(
        {"SEED_CATALOG": False, "REDIS_URL": "redis://127.0.0.1:1/0", "HEARTBEAT_INTERVAL": 0}
    )
    return app.url_map.bind("shop.invalid")


def app_serves_get(path: str) -> bool:
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    try:
        app_serves().match(path, method="GET")
    except RequestRedirect:  # /path -> /path/: a probe would get a 308, not a 200
        return False
    except HTTPException:
        return False
    return True


def names_config_reads() -> set[str]:
    """Every environment variable shop/config.py looks up (for the app and for
    gunicorn), recorded while it loads."""
    from shop.config import load_config, load_server_settings

    class Recorder(dict):
        seen: set[str] = set()

        def get(self, key: str, default: Any = None) -> Any:
            self.seen.add(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> Any:
            self.seen.add(key)
            return super().__getitem__(key)

        def __contains__(self, key: object) -> bool:
            self.seen.add(str(key))
            return super().__contains__(key)

    recorder = Recorder()
    load_config(recorder)
    load_server_settings(recorder)
    return set(recorder.seen)


# Runs shop/gunicorn_conf.py in a clean process with one container's
# environment and reports what gunicorn would use, and which variables it read.
_GUNICORN_PROBE = """
import json, os, runpy
class Recorder(dict):
    seen = set()
    def get(self, key, default=None):
        self.seen.add(key); return super().get(key, default)
    def __getitem__(self, key):
        self.seen.add(key); return super().__getitem__(key)
    def __contains__(self, key):
        self.seen.add(key); return super().__contains__(key)
os.environ = Recorder(os.environ)
ns = runpy.run_module("shop.gunicorn_conf")
print(json.dumps({"graceful_timeout": ns["graceful_timeout"], "timeout": ns["timeout"],
                  "bind": ns["bind"], "workers": ns["workers"], "read": sorted(os.environ.seen)}))
"""


@dataclass(frozen=True)
class GunicornView:
    graceful_timeout: int
    timeout: int
    bind: list[str]
    workers: int
    read: frozenset[str]


def gunicorn_view(env: Mapping[str, str]) -> GunicornView:
    """gunicorn's settings from shop/gunicorn_conf.py under `env` (and nothing else)."""
    process_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    result = subprocess.run(
        [sys.executable, "-c", _GUNICORN_PROBE],
        capture_output=True,
        text=True,
        env=process_env,
        cwd=REPO,
        timeout=COMMAND_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(f"shop/gunicorn_conf.py failed under {sorted(env)}: {result.stderr}")
    data = json.loads(result.stdout)
    return GunicornView(
        graceful_timeout=int(data["graceful_timeout"]),
        timeout=int(data["timeout"]),
        bind=list(data["bind"]),
        workers=int(data["workers"]),
        read=frozenset(data["read"]),
    )


def mounted_nginx_conf(objects: list[Obj], workload: Obj, container: Obj) -> str | None:
    """The nginx.conf an nginx container runs: from the ConfigMap mounted where `-c` points."""
    argv = list(container.get("command", [])) + list(container.get("args", []))
    if "-c" not in argv:
        return None
    conf_path = Path(argv[argv.index("-c") + 1])
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if Path(mount["mountPath"]) != conf_path.parent:
            continue
        source = volumes.get(mount["name"], {}).get("configMap")
        configmap = source and find(objects, "ConfigMap", source["name"])
        if configmap:
            return configmap.get("data", {}).get(conf_path.name)
    return None


def nginx_exact_locations(conf: str) -> set[str]:
    """Paths nginx answers itself (`location = /path`)."""
    return set(re.findall(r"location\s*=\s*(\S+)\s*\{", conf))


def nginx_seconds(conf: str, directive: str) -> int:
    """The longest value `directive` has anywhere in `conf` (a location may raise it)."""
    found = re.findall(rf"^\s*{directive}\s+(\d+)s;", conf, re.MULTILINE)
    return max(map(int, found)) if found else 60  # nginx's default for the proxy timeouts


def prestop_seconds(container: Obj) -> int | None:
    """How long the preStop hook pauses (a sleep action, or the first `sleep N` it runs)."""
    hook = container.get("lifecycle", {}).get("preStop")
    if not hook:
        return None
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = " ".join(hook.get("exec", {}).get("command", []))
    match = re.search(r"\bsleep\s+(\d+)", command)
    return int(match.group(1)) if match else 0


def hpa_for(objects: list[Obj], workload: Obj) -> Obj | None:
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] == workload["kind"] and ref["name"] == workload["metadata"]["name"]:
            return hpa
    return None


def minimum_replicas(objects: list[Obj], workload: Obj) -> int:
    hpa = hpa_for(objects, workload)
    if hpa is not None:
        return int(hpa["spec"].get("minReplicas", 1))
    return int(workload["spec"].get("replicas", 1))


def _count(value: int | str, total: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    whole, rest = divmod(percent * total, 100)
    return whole + (1 if round_up and rest else 0)


# -------------------------------------------------------------------- checks
def check_selectors(objects: list[Obj]) -> list[str]:
    """Every selector matches the pods it is meant for."""
    found = []
    for w in workloads(objects):
        if not selects(w["spec"]["selector"], pod_labels(w)):
            found.append(f"{name_of(w)}: its selector does not match its own pod labels")
        spec = pod_spec(w)
        spreads = spec.get("topologySpreadConstraints", [])
        anti = spec.get("affinity", {}).get("podAntiAffinity", {})
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) + [
            t["podAffinityTerm"]
            for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
        ]
        for rule in spreads + terms:
            if not selects(rule["labelSelector"], pod_labels(w)):
                found.append(f"{name_of(w)}: a spread/anti-affinity rule selects other pods")
    for svc in of_kind(objects, "Service"):
        if not selected_workloads(objects, svc["spec"].get("selector")):
            found.append(f"{name_of(svc)}: its selector matches no pod")
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        matched = selected_workloads(objects, pdb["spec"].get("selector"))
        if len(matched) != 1:
            found.append(f"{name_of(pdb)}: its selector matches {len(matched)} workloads, not 1")
    for policy in of_kind(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        if selector and not selected_workloads(objects, selector):
            found.append(f"{name_of(policy)}: its podSelector matches no pod")
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "podSelector" in peer and not selected_workloads(objects, peer["podSelector"]):
                    found.append(f"{name_of(policy)}: a 'from' podSelector matches no pod")
    return found


def check_service_ports(objects: list[Obj]) -> list[str]:
    """Every Service targetPort is the name of a port the selected pods declare."""
    found = []
    for svc in of_kind(objects, "Service"):
        for w in selected_workloads(objects, svc["spec"].get("selector")):
            names = container_port_names(w)
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if not isinstance(target, str):
                    found.append(
                        f"{name_of(svc)}: targetPort {target} is a number; name a container port"
                    )
                elif target not in names:
                    found.append(
                        f"{name_of(svc)}: targetPort {target!r} is no container port of "
                        f"{name_of(w)} (it has {sorted(names)})"
                    )
    return found


def check_probes(objects: list[Obj]) -> list[str]:
    """The shop is probed on /healthz, which the app serves and which touches no Redis
    (a Redis outage must neither restart every pod nor empty the Service); nginx on its
    own paths."""
    found = []
    for w in workloads(objects):
        for c in containers(w, init=False):
            where = f"{name_of(w)} container {c['name']}"
            for kind in ("readinessProbe", "livenessProbe"):
                if kind not in c:
                    found.append(f"{where}: no {kind}")
            probes = {
                k: c[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c
            }
            for kind, probe in probes.items():
                http = probe.get("httpGet")
                if http is None:
                    continue
                if container_port_number(w, http["port"]) is None:
                    found.append(f"{where}: {kind} port {http['port']!r} is not a container port")
                if is_gunicorn(c) and not app_serves_get(http["path"]):
                    found.append(f"{where}: {kind} path {http['path']} is not served by the app")
                if is_nginx(c):
                    conf = mounted_nginx_conf(objects, w, c) or ""
                    if http["path"] not in nginx_exact_locations(conf):
                        found.append(f"{where}: {kind} path {http['path']} is not nginx's own")
            if is_gunicorn(c):
                wanted = {"readinessProbe": "/healthz", "livenessProbe": "/healthz"}
                for kind, path in wanted.items():
                    got = probes.get(kind, {}).get("httpGet", {}).get("path")
                    if kind in probes and got != path:
                        found.append(f"{where}: {kind} must GET {path}, not {got}")
    return found


def check_grace_periods(objects: list[Obj]) -> list[str]:
    """terminationGracePeriodSeconds outlasts preStop plus the server's own drain."""
    found = []
    for w in workloads(objects):
        grace = int(pod_spec(w).get("terminationGracePeriodSeconds", 30))
        for c in containers(w, init=False):
            where = f"{name_of(w)} container {c['name']}"
            pause = prestop_seconds(c)
            if (is_gunicorn(c) or is_nginx(c)) and pause is None:
                found.append(f"{where}: no preStop pause before the server is stopped")
            if is_gunicorn(c):
                drain, what = gunicorn_view(env_literals(c)).graceful_timeout, "gunicorn graceful"
            elif is_nginx(c):
                conf = mounted_nginx_conf(objects, w, c) or ""
                drain, what = nginx_seconds(conf, "proxy_read_timeout"), "nginx proxy_read"
            else:
                drain, what = 0, "no drain"
            if grace <= (pause or 0) + drain:
                found.append(
                    f"{where}: terminationGracePeriodSeconds {grace} is not longer than "
                    f"preStop {pause or 0} s + {what} timeout {drain} s"
                )
    return found


def check_gunicorn_binds_its_port(objects: list[Obj]) -> list[str]:
    """gunicorn listens, on every interface, on the port the container declares."""
    found = []
    for w in workloads(objects):
        for c in filter(is_gunicorn, containers(w, init=False)):
            declared = {p["containerPort"] for p in c.get("ports", [])}
            binds = gunicorn_view(env_literals(c)).bind
            ports = {int(b.rpartition(":")[2]) for b in binds}
            hosts = {b.rpartition(":")[0] for b in binds}
            if not ports & declared or not hosts <= {"0.0.0.0", "[::]", ""}:
                found.append(
                    f"{name_of(w)} container {c['name']}: gunicorn binds {binds}, "
                    f"but the container declares ports {sorted(declared)}"
                )
    return found


def check_disruption_budgets(objects: list[Obj]) -> list[str]:
    """A PDB always lets one pod go (drains, node upgrades); a rollout can always progress."""
    found = []
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        for w in selected_workloads(objects, pdb["spec"].get("selector")):
            replicas = minimum_replicas(objects, w)
            spec = pdb["spec"]
            if "maxUnavailable" in spec:
                allowed = _count(spec["maxUnavailable"], replicas, round_up=True)
            else:
                allowed = replicas - _count(spec.get("minAvailable", 0), replicas, round_up=True)
            if allowed < 1:
                found.append(
                    f"{name_of(pdb)}: with {replicas} replicas of {name_of(w)} it allows no "
                    "disruption, so a node drain or upgrade would block"
                )
    for w in of_kind(objects, "Deployment"):
        rolling = w["spec"].get("strategy", {}).get("rollingUpdate", {})
        replicas = minimum_replicas(objects, w)
        surge = _count(rolling.get("maxSurge", "25%"), replicas, round_up=True)
        unavailable = _count(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
        if surge < 1 and unavailable < 1:
            found.append(f"{name_of(w)}: maxSurge and maxUnavailable are 0: no rollout can start")
    return found


def check_autoscaler(objects: list[Obj]) -> list[str]:
    """The HPA scales an existing Deployment on CPU, which every container requests."""
    found = []
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = find(objects, ref["kind"], ref["name"])
        if target is None or ref["kind"] != "Deployment" or ref.get("apiVersion") != "apps/v1":
            found.append(f"{name_of(hpa)}: scaleTargetRef {ref} is not a Deployment here")
            continue
        if "replicas" in target["spec"]:
            found.append(
                f"{name_of(target)}: sets replicas, which every apply resets under the HPA"
            )
        metrics = hpa["spec"].get("metrics", [])
        if not any(m.get("resource", {}).get("name") == "cpu" for m in metrics):
            found.append(f"{name_of(hpa)}: does not scale on CPU")
        for c in containers(target):
            if "cpu" not in c.get("resources", {}).get("requests", {}):
                found.append(f"{name_of(target)} container {c['name']}: no CPU request to scale on")
        window = hpa["spec"].get("behavior", {}).get("scaleDown", {})
        if not window.get("stabilizationWindowSeconds"):
            found.append(f"{name_of(hpa)}: no scale-down stabilization window")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            found.append(f"{name_of(hpa)}: minReplicas above maxReplicas")
    return found


def check_security(objects: list[Obj]) -> list[str]:
    """No container runs as root, escalates, keeps capabilities or writes its root filesystem."""
    found = []
    for w in workloads(objects):
        pod = pod_spec(w).get("securityContext", {})
        for c in containers(w):
            sc = c.get("securityContext", {})
            where = f"{name_of(w)} container {c['name']}"
            # A container's own setting wins over the pod's.
            effective = {**pod, **sc}.get
            if effective("runAsNonRoot") is not True:
                found.append(f"{where}: runAsNonRoot is not true")
            if effective("runAsUser") in (0, None):
                found.append(f"{where}: runs as root (runAsUser {effective('runAsUser')})")
            if sc.get("allowPrivilegeEscalation") is not False:
                found.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                found.append(f"{where}: privileged")
            if sc.get("readOnlyRootFilesystem") is not True:
                found.append(f"{where}: the root filesystem is writable")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                found.append(f"{where}: capabilities are not all dropped")
            if sc.get("capabilities", {}).get("add"):
                found.append(f"{where}: adds capabilities")
            if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
                found.append(f"{where}: no RuntimeDefault seccomp profile")
    return found


def check_resources(objects: list[Obj]) -> list[str]:
    found = []
    for w in workloads(objects):
        for c in containers(w):
            for bound in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(c.get("resources", {}).get(bound, {}))
                if missing:
                    found.append(
                        f"{name_of(w)} container {c['name']}: no {bound} for {sorted(missing)}"
                    )
    return found


def check_env_names(objects: list[Obj]) -> list[str]:
    """Every variable set on a shop container is one the shop reads (or fills another's value)."""
    found = []
    config_reads = names_config_reads()
    for w in workloads(objects):
        for c in filter(is_gunicorn, containers(w)):
            env = env_literals(c)
            known = config_reads | gunicorn_view(env).read
            helpers = {
                ref
                for var in c.get("env", [])
                for ref in re.findall(r"\$\((\w+)\)", var.get("value", ""))
            }
            for name in env:
                if name not in known and name not in helpers:
                    found.append(
                        f"{name_of(w)} container {c['name']}: sets {name}, which "
                        "shop/config.py does not read"
                    )
            try:
                from shop.config import load_config

                load_config(env)
            except (ValueError, RuntimeError) as exc:
                found.append(f"{name_of(w)} container {c['name']}: shop/config.py refuses: {exc}")
    return found


def check_references(objects: list[Obj]) -> list[str]:
    """Every ConfigMap, Secret and key a pod refers to is rendered, in the same namespace."""
    found = []
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    declared = {o["metadata"]["name"] for o in of_kind(objects, "Namespace")}
    if len(namespaces) != 1 or namespaces != declared:
        found.append(f"objects are in namespaces {namespaces}, the Namespace objects {declared}")

    def data_keys(kind: str, name: str) -> set[str] | None:
        obj = find(objects, kind, name)
        return None if obj is None else set(obj.get("data", {})) | set(obj.get("stringData", {}))

    for w in workloads(objects):
        for volume in pod_spec(w).get("volumes", []):
            if (
                "configMap" in volume
                and data_keys("ConfigMap", volume["configMap"]["name"]) is None
            ):
                found.append(f"{name_of(w)}: volume {volume['name']} names a missing ConfigMap")
            if "secret" in volume and data_keys("Secret", volume["secret"]["secretName"]) is None:
                found.append(f"{name_of(w)}: volume {volume['name']} names a missing Secret")
        for c in containers(w):
            for source in c.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in source and data_keys(kind, source[key]["name"]) is None:
                        found.append(f"{name_of(w)} container {c['name']}: missing {kind}")
            for var in c.get("env", []):
                ref = var.get("valueFrom", {})
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key not in ref:
                        continue
                    keys = data_keys(kind, ref[key]["name"])
                    if keys is None or ref[key]["key"] not in keys:
                        found.append(
                            f"{name_of(w)} container {c['name']}: {var['name']} refers to "
                            f"{kind} {ref[key]['name']} key {ref[key]['key']}, which is not there"
                        )
    return found


CHECKS = (
    check_selectors,
    check_service_ports,
    check_probes,
    check_grace_periods,
    check_gunicorn_binds_its_port,
    check_disruption_budgets,
    check_autoscaler,
    check_security,
    check_resources,
    check_env_names,
    check_references,
)


def problems(objects: list[Obj]) -> list[str]:
    """Every problem every check finds."""
    return [problem for check in CHECKS for problem in check(objects)]


# ---------------------------------------------------------- network policies
ANYONE = "<anyone>"


def allowed_sources(objects: list[Obj], target: Obj, port: str) -> set[str]:
    """Which workloads (by name, or ANYONE) may connect to `target`'s named `port`.

    Kubernetes' semantics: a pod selected by no ingress policy accepts
    everything; one selected by some accepts what any of them allows.
    """
    number = container_port_number(target, port)
    policies = [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"] or {"matchLabels": {}}, pod_labels(target))
    ]
    if not policies:
        return {ANYONE}
    sources: set[str] = set()
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            rule_ports = [p.get("port") for p in rule.get("ports", [])]
            if rule_ports and port not in rule_ports and number not in rule_ports:
                continue
            peers = rule.get("from")
            if not peers:
                sources.add(ANYONE)
                continue
            for peer in peers:
                if "podSelector" not in peer or "namespaceSelector" in peer:
                    sources.add(ANYONE)  # an ipBlock or other namespaces: outside the shop
                    continue
                # An empty podSelector is every pod of the namespace.
                sources |= {
                    w["metadata"]["name"]
                    for w in workloads(objects)
                    if selects(peer["podSelector"] or {"matchLabels": {}}, pod_labels(w))
                }
    return sources


def reachability(objects: list[Obj]) -> dict[tuple[str, str], set[str]]:
    """{(workload, port name): the workloads that may connect to it} for every declared port."""
    result = {}
    for w in workloads(objects):
        for name in sorted(container_port_names(w)):
            result[(w["metadata"]["name"], name)] = allowed_sources(objects, w, name)
    return result
