"""Fixtures for Redis-only tests: a namespaced broker on the shared test Redis, private servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis_servers import Fleet, need_binaries

from conveyor.brokers.redis import RedisBroker


async def drop_namespace(url: str, namespace: str) -> None:
    """Delete only this test's keys (its namespace); never FLUSHDB."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.unlink(*keys[start : start + 500])
    finally:
        await client.aclose()


@pytest.fixture
def namespace() -> str:
    """A key namespace no other test uses."""
    return f"conveyor-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_broker(redis_url: str, namespace: str) -> AsyncIterator[RedisBroker]:
    """A RedisBroker on the test Redis with its own namespace, deleted afterwards."""
    broker = RedisBroker.from_url(f"{redis_url}?namespace={namespace}")
    try:
        yield broker
    finally:
        await broker.close()
        await drop_namespace(redis_url, namespace)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Private Redis processes started by one test; all stopped afterwards."""
    need_binaries("redis-server")
    processes = Fleet()
    try:
        yield processes
    finally:
        processes.stop_all()
