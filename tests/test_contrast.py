"""`shop-cluster demo --contrast`, for real: two clusters, the same kill, two endings.

State in sticky replicas' memory must lose the shopper's login and cart; state
in Redis must lose nothing, not one background request or cart. Asserting
both keeps the contrast from ever turning into two happy endings (say, memory
mode quietly falling back to Redis) or two sad ones.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from shop.cluster import contrast, procs
from shop.cluster.state import Workdir

pytestmark = pytest.mark.cluster

REPLICAS = 2  # the fewest with one to kill; more background shoppers share the victim


def two_free_ports() -> int:
    """A port P with P + 1 free too (the second cluster's)."""
    for _ in range(50):
        port = procs.free_port()
        if port < 65535 and not procs.port_is_open(port + 1):
            return port
    raise RuntimeError("no two adjacent free ports")


def test_memory_loses_the_shopper_and_redis_loses_nothing(tmp_path: Path) -> None:
    workdir = Workdir(tmp_path)
    port = two_free_ports()
    screen = io.StringIO()
    console = Console(file=screen, width=120, highlight=False)
    try:
        result = contrast.run_contrast(workdir, console, port=port, replicas=REPLICAS)
    finally:
        print(screen.getvalue())  # shown with -s, and on failure
        for cluster in contrast.clusters(workdir).values():
            cluster.down()  # nothing to do unless run_contrast failed to
    memory, redis = result.memory, result.redis
    out = screen.getvalue()

    # Act 1: the shopper was served by one replica, which died with their state.
    assert memory.cart_before and not memory.logged_in_after
    assert memory.cart_after == {}
    assert "logged out" in out and "still empty: it died with " + memory.victim in out
    # Its background shoppers on that replica lost theirs too, without one failed
    # request: nginx hid the crash, the loss is silent.
    assert memory.report.failures == []
    if memory.on_victim:
        assert memory.report.forced_logins >= memory.on_victim
        assert memory.report.lost_carts >= memory.on_victim
    else:  # all 6 hashed to the other replica (1 run in 64): nothing to lose
        assert memory.report.forced_logins == memory.report.lost_carts == 0

    # Act 2: the same kill, nothing lost by anyone.
    assert redis.logged_in_after and redis.cart_after == redis.cart_before
    assert redis.report.ok, (redis.report.failures[:3], redis.report.mismatches[:3])
    assert (redis.report.lost_carts, redis.report.forced_logins) == (0, 0)
    assert redis.report.requests >= contrast.BACKGROUND_SHOPPERS * (
        contrast.REQUESTS_BEFORE_KILL + contrast.REQUESTS_AFTER_KILL
    )

    assert result.as_expected
    assert "As the story wants it" in out
    # Both clusters are gone: nothing listens on their ports, no state file is left.
    assert not procs.port_is_open(port) and not procs.port_is_open(port + 1)
    for cluster in contrast.clusters(workdir).values():
        assert not cluster.workdir.state_file.exists()
