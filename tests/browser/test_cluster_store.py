"""The cluster page in real Chromium on an HA cluster (`up --redis ha`): the
store part names the Redis node taking writes now and which replicas are in
sync, and redraws itself from /api/cluster when the primary is killed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cluster_support import Launcher, running_cluster

from shop.cluster import procs

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

# Sentinel promotes in about 3 s; the page redraws every 2 s after that.
REDRAW_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    with running_cluster(tmp_path_factory.mktemp("ha-page"), replicas=2, redis="ha") as launcher:
        yield launcher


def node_address(launcher: Launcher, name: str) -> str:
    node = next(n for n in launcher.status()["redis"]["nodes"] if n["name"] == name)
    return f"{procs.LOOPBACK}:{node['port']}"


def test_the_cluster_page_shows_the_new_primary_without_a_reload(
    ha_cluster: Launcher, page, shots
) -> None:
    page.goto(f"{ha_cluster.url}/cluster")
    old = ha_cluster.status()["redis"]["primary"]
    assert page.locator("#store-address").inner_text() == node_address(ha_cluster, old)
    assert page.locator("#store-in-sync").inner_text() == "2"
    assert page.locator("#store-rows td.state").all_inner_texts() == ["yes", "yes"]
    assert page.locator("#store-refusing").is_hidden()
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    shots(page, "store-before-the-kill")

    ha_cluster.run("kill", "redis-primary")
    try:
        # The new primary as the shop sees it, one replica in sync, drawn by script.
        page.wait_for_function(
            "old => { const now = document.getElementById('store-address').textContent;"
            " return now !== old && document.getElementById('store-in-sync').textContent"
            " === '1'; }",
            arg=node_address(ha_cluster, old),
            timeout=REDRAW_TIMEOUT_MS,
        )
        shots(page, "store-after-the-failover")
        new = ha_cluster.status()["redis"]["primary"]
        assert page.locator("#store-address").inner_text() == node_address(ha_cluster, new)
        assert page.locator("#store-rows td.state").all_inner_texts() == ["yes"]
    finally:
        ha_cluster.run("start", old)
    assert navigations == [], "the page reloaded instead of redrawing itself"
