"""Fixtures for worker tests: broker URLs of every kind, for servers that open their own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.brokers import open_broker
from conveyor.brokers.protocol import Broker
from conveyor.brokers.redis import RedisBroker
from support import delete_namespace


@pytest.fixture(params=("memory", "sqlite", "redis"))
async def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL naming a fresh, empty broker of each kind (for servers that open their own)."""
    kind: str = request.param
    if kind == "memory":
        yield f"memory://test-{uuid.uuid4().hex[:12]}"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'broker.db'}"
    else:
        url = request.getfixturevalue("redis_url")
        namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
        yield f"{url}?namespace={namespace}"
        await delete_namespace(url, namespace)


@pytest.fixture
async def url_broker(broker_url: str) -> AsyncIterator[Broker]:
    """A broker opened from ``broker_url``, for the test to enqueue and inspect."""
    instance = open_broker(broker_url)
    yield instance
    await instance.close()


@pytest.fixture
async def direct(redis_url: str) -> AsyncIterator[tuple[RedisBroker, str]]:
    """The test's own broker (straight to Redis) and the namespace the worker shares."""
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    broker = RedisBroker.from_url(f"{redis_url}?namespace={namespace}")
    yield broker, namespace
    await broker.close()
    await delete_namespace(redis_url, namespace)
