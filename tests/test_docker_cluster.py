"""The docker-compose cluster, booted for real: a private dockerd (see
docker_support.py), the repository's docker-compose.yml and Dockerfile, local
images in place of the official ones. docs/docker-demo.md is walked as written;
then containers are killed and the shop scaled under load, as the launcher's
tests do with processes.

One compose project serves the module; tests run in file order and leave it
as they found it (three healthy replicas), until the last one takes it down.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
from cluster_support import assert_clean
from docker_support import REPO, Compose, PrivateDocker, compose_project

from shop.cluster import procs
from shop.cluster.loadgen import LoadGenerator, SimulatedShopper, plentiful

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

DEMO = REPO / "docs" / "docker-demo.md"
LOAD_SHOPPERS = 8
LOAD_BOUND = 120.0  # seconds: the load stops by itself even if a test hangs
LOAD_MAX_REQUESTS = 5000  # per shopper; time, not count, ends the load here
WALK_TIMEOUT = 600  # the demo builds the image and waits for health twice
# docker-compose runs the demo's `docker compose`; everything else is as written.
WALK_PRELUDE = """set -euo pipefail
docker() {
  if [[ ${1:-} == compose ]]; then shift; docker-compose --ansi never "$@"
  else command docker "$@"; fi
}
"""


def demo_blocks(*, stopping: bool) -> str:
    """The demo's sh blocks in order: the story (sections 1-5), or its "Stopping" section."""
    sections = re.split(r"^## ", DEMO.read_text(), flags=re.MULTILINE)[1:]
    chosen = [s for s in sections if s.startswith("Stopping") == stopping]
    blocks = [b for s in chosen for b in re.findall(r"```sh\n(.*?)```", s, flags=re.DOTALL)]
    assert blocks, f"no sh blocks found in {DEMO}"
    return "\n".join(blocks)


def walk(compose: Compose, script: str) -> str:
    """Run the demo's commands in bash from the repository's root; their output."""
    result = subprocess.run(
        ["bash", "-c", WALK_PRELUDE + script],
        capture_output=True,
        text=True,
        timeout=WALK_TIMEOUT,
        env=compose.env,
        cwd=REPO,
    )
    assert result.returncode == 0, f"the demo failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def served_by(url: str, count: int) -> list[str]:
    with requests.Session() as http:
        return [
            http.get(f"{url}/api/products", timeout=10).headers["X-Served-By"] for _ in range(count)
        ]


def retried(compose: Compose) -> Counter[int]:
    """nginx's access log: how many requests tried 1, 2, 3... replicas."""
    log = compose.run("logs", "--no-color", "nginx").stdout
    return Counter(len(m.split(", ")) for m in re.findall(r"upstream=(\S+(?:, \S+)*) ustatus", log))


def ensure_three_replicas(compose: Compose) -> None:
    compose.run("up", "--detach", "--scale", "shop=3")
    compose.wait_healthy({"shop": 3, "nginx": 1, "redis": 1})


def load(url: str) -> LoadGenerator:
    return LoadGenerator(url, LOAD_SHOPPERS, duration=LOAD_BOUND, max_requests=LOAD_MAX_REQUESTS)


@pytest.fixture(scope="module")
def stack(docker_engine: PrivateDocker) -> Iterator[Compose]:
    with compose_project(docker_engine, 0) as compose:
        started = time.monotonic()
        compose.run("build")
        docker_engine.timings["shop image build"] = time.monotonic() - started
        print(
            "\ntimings (s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in docker_engine.timings.items())
        )
        yield compose


# ---------------------------------------------------------------------------
def test_the_docker_demo_runs_as_written(stack: Compose, docker_engine: PrivateDocker) -> None:
    out = walk(stack, demo_blocks(stopping=False))
    victim = re.search(r"^served by ([0-9a-f]{12})$", out, re.MULTILINE)
    assert victim, out
    assert '{"username":"ada"}' in out  # still logged in after the kill
    cart = re.search(r'^\{"items":.*"total_cents".*\}$', out, re.MULTILINE)
    assert cart and cart.group(0).count('"qty":2') == 2, out  # both lines intact
    assert re.search(r'^\{.*"order_id"', out, re.MULTILINE), out  # checked out
    assert f"{victim.group(1)} serves again" in out
    assert victim.group(1) in stack.health("shop")


def test_three_replicas_serve_behind_nginx_and_report_healthy(stack: Compose) -> None:
    ensure_three_replicas(stack)
    replicas = set(stack.health("shop"))
    seen: set[str] = set()
    procs.wait_until(  # round robin: every replica's turn comes within a few requests
        lambda: seen.update(served_by(stack.url, 3)) or seen == replicas,
        timeout=30,
        interval=0.5,
        what=f"every replica to serve ({replicas})",
    )
    assert stack.health("nginx") and stack.health("redis")


def test_killing_the_container_that_served_the_last_request_fails_nothing(
    stack: Compose, docker_engine: PrivateDocker
) -> None:
    ensure_three_replicas(stack)
    watcher = SimulatedShopper(stack.url)
    watcher.sign_up()
    with load(stack.url) as shoppers:
        time.sleep(2)
        for product in plentiful(watcher.products(), 3):
            assert watcher.add(product["id"], 2)
        victim = watcher.last_served_by
        served_by_victim = watcher.served_by[victim]

        docker_engine.cli("kill", victim)

        for _ in range(6):  # every replica's turn comes, the dead one's too
            assert watcher.must("GET", "/api/me").json()["username"] == watcher.name
            assert watcher.cart() == dict(watcher.acknowledged)
        assert watcher.served_by[victim] == served_by_victim  # nginx went around it
        time.sleep(3)
        stack.run("up", "--detach", "--scale", "shop=3")  # brings it back
        stack.wait_healthy({"shop": 3})
        before = shoppers.served_by()[victim]
        procs.wait_until(
            lambda: shoppers.served_by()[victim] > before,
            timeout=30,
            interval=0.2,
            what=f"{victim} to serve the load again",
        )
        time.sleep(2)
    report = shoppers.report()
    assert_clean(report, at_least=LOAD_SHOPPERS * 50)
    assert victim in report.served_by
    assert watcher.must("POST", "/api/checkout", expect=(201,)).json()["order_id"]
    assert watcher.failures == []


def test_scale_3_to_5_to_2_under_load_fails_no_request(stack: Compose) -> None:
    ensure_three_replicas(stack)
    before = set(stack.health("shop"))
    with load(stack.url) as shoppers:
        time.sleep(2)
        stack.run("up", "--detach", "--no-recreate", "--scale", "shop=5")
        stack.wait_healthy({"shop": 5})
        newcomers = set(stack.health("shop")) - before
        assert len(newcomers) == 2
        procs.wait_until(  # the follower reloads nginx with them
            lambda: all(shoppers.served_by()[name] for name in newcomers),
            timeout=30,
            interval=0.2,
            what=f"{newcomers} to serve",
        )
        stack.run("up", "--detach", "--no-recreate", "--scale", "shop=2")
        after_scale_down = shoppers.requests_so_far()
        time.sleep(3)
        assert shoppers.requests_so_far() > after_scale_down  # still under load
    report = shoppers.report()
    print(f"\nrequests by replicas tried (nginx's log): {dict(sorted(retried(stack).items()))}")
    assert_clean(report, at_least=LOAD_SHOPPERS * 50)
    remaining = set(stack.health("shop"))
    assert len(remaining) == 2 and set(served_by(stack.url, 6)) == remaining


def test_down_leaves_no_container_network_or_volume(stack: Compose) -> None:
    walk(stack, demo_blocks(stopping=True))
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}

