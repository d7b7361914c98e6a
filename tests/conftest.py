"""Service discovery and the ``broker`` fixture shared by every test folder.

Services are found by URL (env var with a loopback default). Locally a missing service skips its
tests; in CI (``CI=true``) it fails them, so a broken CI machine never passes silently.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "redis"))  # its helpers: redis_servers, tls

from conveyor.brokers.protocol import Broker
from faultproxy import FaultProxy
from support import delete_namespace

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
# redis-acl: Redis as a user limited to conveyor's ACL rules (brokers/redis/acl.py, acl_redis);
# redis-tls: Redis over TLS, the server's certificate verified (see tls_redis).
BROKER_KINDS = ("memory", "sqlite", "redis", "redis-acl", "redis-tls")


def service_missing(what: str, why: str) -> None:
    """Skip locally, fail in CI: a missing service must never pass silently there."""
    message = f"{what} unavailable: {why}"
    if IN_CI:
        pytest.fail(message + " (CI=true requires it)")
    pytest.skip(message)


def redis_available() -> str | None:
    """Return why Redis at REDIS_URL is unusable, or None when it answers PING."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return str(exc)
    return None


@pytest.fixture
def redis_url() -> str:
    """The test Redis URL, after checking that it answers (skip/fail otherwise)."""
    why = redis_available()
    if why is not None:
        service_missing("Redis at " + REDIS_URL, why)
    return REDIS_URL


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    """A TCP proxy in front of the test Redis that the test can break (tests/faultproxy.py)."""
    parts = urlsplit(redis_url)
    fault_proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    yield fault_proxy
    fault_proxy.close()


@pytest.fixture(scope="session")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A private redis-server with a user limited to the documented ACL; (its URL, admin URL).

    Private, because ACL users are server-wide and the shared Redis is not ours to change.
    """
    from redis_servers import Fleet, server, server_version

    from conveyor.brokers.redis.acl import acl_rules

    with Fleet() as fleet:
        process = fleet.add(server(tmp_path_factory.mktemp("acl")))
        with process.client() as admin:
            rules = acl_rules("conveyor-test-*", redis_version=server_version(admin))
            admin.execute_command("ACL", "SETUSER", "conveyor", "on", ">acl-test-pw", *rules)
        address = f"127.0.0.1:{process.port}/0"
        yield f"redis://conveyor:acl-test-pw@{address}", f"redis://{address}"


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A private 3-node Redis Cluster shared by the session's tests; its nodes' addresses.

    Tests keep apart by namespace (a fresh one each) and never stop or reshard its nodes: those
    that do start a cluster of their own.
    """
    from redis_servers import Fleet, start_cluster

    with Fleet() as fleet:
        yield start_cluster(fleet, tmp_path_factory.mktemp("cluster"))


@pytest.fixture
async def cluster_broker(redis_cluster: list[str]) -> AsyncIterator[Broker]:
    """A Redis broker on the session's Cluster, under a namespace of its own."""
    from conveyor.brokers.redis import RedisBroker

    nodes = f"{redis_cluster[0]},{redis_cluster[1]}"
    broker = RedisBroker.from_url(f"redis+cluster://{nodes}?namespace=c{uuid.uuid4().hex[:8]}")
    try:
        yield broker
    finally:
        await broker.close()


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A private redis-server taking TLS clients; (a rediss:// URL to it, its plain admin URL)."""
    from redis_servers import Fleet, free_port, server
    from tls import make_certs, tls_options

    certs = make_certs(tmp_path_factory.mktemp("tls-certs"))
    port = free_port()
    with Fleet() as fleet:
        process = fleet.add(
            server(tmp_path_factory.mktemp("tls"), *tls_options(certs, port, "optional"))
        )
        yield (
            f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs.ca}",
            f"redis://127.0.0.1:{process.port}/0",
        )


@pytest.fixture(params=BROKER_KINDS)
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    """A fresh, empty broker of each kind; the conformance suite runs once per kind."""
    kind: str = request.param
    if kind == "memory":
        from conveyor.brokers.memory import MemoryBroker

        instance: Broker = MemoryBroker()
        yield instance
        await instance.close()
    elif kind == "sqlite":
        from conveyor.brokers.sqlite import SqliteBroker

        instance = SqliteBroker.from_url(f"sqlite:///{tmp_path / 'broker.db'}")
        yield instance
        await instance.close()
    else:
        if kind == "redis":
            url = admin_url = request.getfixturevalue("redis_url")
        else:  # a private server; the test's keys are deleted as its admin, over plain TCP
            url, admin_url = request.getfixturevalue(f"{kind.removeprefix('redis-')}_redis")
        from conveyor.brokers.redis import RedisBroker

        namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
        joiner = "&" if "?" in url else "?"
        instance = RedisBroker.from_url(f"{url}{joiner}namespace={namespace}")
        try:
            yield instance
        finally:
            await instance.close()
            await delete_namespace(admin_url, namespace)
