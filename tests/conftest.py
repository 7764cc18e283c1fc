"""Fixtures shared by every test: real servers on loopback, stopped by pid.

No fakes: `redis_server` is a real redis-server in a temp dir, started once per
test session and emptied before each test that uses `redis_client`. A test that
uses a redis-server fixture is an integration test: the marker comes from the
fixture (see `pytest_collection_modifyitems`), so `-m integration` misses none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from shop.cluster import ha, procs

# The fixtures that start a real redis-server; every other Redis fixture uses one.
REDIS_FIXTURES = frozenset({"redis_server", "own_redis"})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test's report shows the state of every server fixture it used
    (any fixture value with a `diagnostics()` method: tests/failure_report.py),
    taken at the failure, so that a CI failure explains itself."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        describe = getattr(value, "diagnostics", None)
        if callable(describe):
            try:
                text = describe()
            except Exception as exc:  # noqa: BLE001 - the failure itself must still be reported
                text = f"(could not describe {name}: {exc!r})"
            report.sections.append((f"{name} at the failure ({report.when})", text))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a real redis-server (directly or through another
    fixture) as `integration`, so the marker cannot be forgotten in a module."""
    for item in items:
        if REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@dataclass
class RedisServer:
    """A redis-server we started: where it listens and how to stop or restart it."""

    port: int
    data_dir: Path
    proc: object = None

    @property
    def url(self) -> str:
        return f"redis://{procs.LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        self.proc = procs.start_redis(self.data_dir, self.port)

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop_process(self.proc.pid, timeout=10)
            self.proc = None

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host=procs.LOOPBACK, port=self.port, socket_timeout=5, **kwargs)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(procs.free_port(), tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on an empty database of the shared test redis-server."""
    if redis_server.proc is None:  # a test that stopped it and failed before restarting
        redis_server.start()
    client = redis_server.client(decode_responses=True)
    client.flushall()
    client.config_resetstat()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for tests that stop, restart or break it."""
    with RedisServer(procs.free_port(), tmp_path / "redis") as server:
        yield server


@pytest.fixture
def primary_with_replica(
    own_redis: RedisServer, tmp_path: Path
) -> Iterator[tuple[RedisServer, object]]:
    """`own_redis` as a primary, plus one real replica of it."""
    # Redis 7 delays a diskless full sync by 5 s to batch replicas; one is enough.
    with own_redis.client() as admin:
        admin.config_set("repl-diskless-sync-delay", 0)
    replica_port = procs.free_port()
    replica = procs.start_redis(
        tmp_path / "replica",
        replica_port,
        extra={"replicaof": f"{procs.LOOPBACK} {own_redis.port}"},
    )
    primary = own_redis.client(decode_responses=True)
    try:
        procs.wait_until(
            # "online" is not enough: right after its first sync a replica is
            # still loading and acknowledges late. Wait until it keeps up.
            lambda: primary.set("probe", 1) and primary.wait(1, 100) == 1,
            timeout=15,
            what="the replica to keep up",
        )
        yield own_redis, replica
    finally:
        procs.stop_process(replica.pid, timeout=0)
        primary.close()


@dataclass
class GuardedPrimary:
    """A primary with the launcher's HA write guard (min-replicas-to-write) and
    one replica, which a test can take away."""

    server: RedisServer
    replica: object

    @property
    def url(self) -> str:
        return self.server.url

    def lose_the_replica(self) -> None:
        """Crash the replica (a SIGTERMed one lingers) and wait until the primary
        has noticed: no replica left in sync, so it refuses writes."""
        procs.stop_process(self.replica.pid, timeout=0)
        with self.server.client(decode_responses=True) as admin:
            procs.wait_until(
                lambda: admin.info("replication")["connected_slaves"] == 0,
                timeout=10,
                what="the primary to notice its replica is gone",
            )


@pytest.fixture
def guarded_primary(primary_with_replica: tuple[RedisServer, object]) -> GuardedPrimary:
    primary, replica = primary_with_replica
    with primary.client() as admin:
        admin.config_set("min-replicas-to-write", ha.MIN_REPLICAS_TO_WRITE)
        admin.config_set("min-replicas-max-lag", ha.MIN_REPLICAS_MAX_LAG)
    return GuardedPrimary(primary, replica)


# -- the shop app (tests/test_shop_*.py) --------------------------------------


@pytest.fixture
def shop_app(redis_server: RedisServer, redis_client: redis.Redis):
    """A shop app (replica-a) on the emptied shared test redis-server, CSRF on."""
    from shop_support import make_app

    return make_app(redis_server.url)


@pytest.fixture
def shop_replicas(redis_server: RedisServer, redis_client: redis.Redis):
    """Two shop apps (replica-a, replica-b) sharing one Redis, as behind nginx."""
    from shop_support import make_app

    return make_app(redis_server.url, "replica-a"), make_app(redis_server.url, "replica-b")


@pytest.fixture
def api(shop_app):
    """A test client of `shop_app` (JSON calls need no CSRF token)."""
    return shop_app.test_client()


@pytest.fixture
def gunicorn_replica(redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path):
    """One real gunicorn replica (gthread, 2 workers, our config) on a free port: (url, log).

    Its metrics directory is in `tmp_path`; it is stopped by pid, even on failure.
    """
    from shop_support import gunicorn_replica

    metrics = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with gunicorn_replica("gunicorn-1", redis_server.url, tmp_path, env=metrics) as replica:
        yield replica.url, replica.log_path


# -- Docker (tests/test_docker_*.py) ------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[object]:
    """A private dockerd with the local images imported, for the whole session;
    skipped, with the reason, where Docker cannot run (tests/docker_support.py)."""
    from docker_support import DockerUnavailable, PrivateDocker

    try:
        engine = PrivateDocker.create()
    except DockerUnavailable as exc:
        pytest.skip(f"Docker cannot run here: {exc}")
    try:
        engine.start()
        engine.local_images()
        yield engine
    finally:
        engine.stop()
