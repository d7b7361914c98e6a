"""The broker's kept connections (brokers/redis/direct.py) are neither lost nor multiplied when
a connection drops and reconnecting fails: each goes back on the broker's list."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import pytest

from conveyor.brokers.redis import RedisBroker
from conveyor.errors import BrokerUnavailableError
from conveyor.message import TaskMessage
from faultproxy import FaultProxy
from support import delete_namespace

pytestmark = pytest.mark.redis


async def test_a_failed_reconnect_keeps_the_connection_on_the_list(
    redis_url: str, proxy: FaultProxy
) -> None:
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    db = urlsplit(redis_url).path or "/0"
    url = f"redis://127.0.0.1:{proxy.port}{db}?namespace={namespace}&socket_timeout=0.3"
    broker = RedisBroker.from_url(url)
    try:
        await asyncio.to_thread(broker.enqueue_blocking, [TaskMessage(id="a", type="t")])
        side = broker._sync_side()
        assert side.lines is not None
        pool = side.client.connection_pool

        def kept() -> tuple[int, int]:
            assert side.lines is not None
            return len(side.lines._idle), len(pool._in_use_connections)

        assert kept() == (1, 1)
        side.client.get_retry().update_retries(0)  # fail fast: one connect attempt
        for _ in range(3):
            proxy.reset()  # the kept connection drops...
            proxy.blackhole(True)  # ...and reconnecting times out in its handshake
            with pytest.raises(BrokerUnavailableError):
                await asyncio.to_thread(broker.enqueue_blocking, [TaskMessage(id="b", type="t")])
            proxy.blackhole(False)
            assert kept() == (1, 1)
        await asyncio.to_thread(broker.enqueue_blocking, [TaskMessage(id="c", type="t")])
        assert kept() == (1, 1)
    finally:
        await broker.close()
        await delete_namespace(redis_url, namespace)
