"""A ``conveyor server`` started in the test's event loop, over the test's broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from conveyor.brokers.protocol import Broker
from conveyor.server import Endpoint, ServerConfig, TaskServer

SHARED_BROKERS = ["sqlite", "redis"]
"""The brokers a server is for: those several processes can share."""

from server.client import LineClient  # noqa: E402

ServerFactory = Callable[..., AbstractAsyncContextManager[TaskServer]]


@pytest.fixture
def start_server(broker: Broker) -> ServerFactory:
    """``async with start_server(heartbeat_s=3) as server:`` serves both protocols on free ports."""

    @asynccontextmanager
    async def start(**options: Any) -> AsyncIterator[TaskServer]:
        options.setdefault("masenko", Endpoint(host="127.0.0.1", port=0))
        options.setdefault("faktory", Endpoint(host="127.0.0.1", port=0))
        options.setdefault("shutdown_grace_s", 0.0)  # tests that want one pass grace_s to stop()
        metrics = options.pop("metrics", None)
        server = TaskServer(broker, ServerConfig(**options), metrics=metrics)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()

    return start


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    """Close every LineClient a test opened."""
    yield
    await LineClient.close_all()
