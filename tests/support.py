"""Small test helpers: waiting on conditions with deadlines (never fixed sleeps), and cleaning
up a Redis namespace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]], *, within: float = 5.0, interval: float = 0.01
) -> T:
    """Await ``check()`` until it returns a truthy value or ``within`` seconds pass.

    Returns the truthy value; raises AssertionError with the last value on timeout.
    """
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last value: {value!r})")
        await asyncio.sleep(interval)


def wait_until(check: Callable[[], T], *, within: float = 5.0, interval: float = 0.01) -> T:
    """Synchronous twin of :func:`eventually` for tests outside an event loop."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last value: {value!r})")
        time.sleep(interval)


async def delete_namespace(url: str, namespace: str) -> None:
    """Delete only the keys this test created (its own namespace); never FLUSHDB."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()
