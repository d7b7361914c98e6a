"""The broker's kept connections (brokers/redis/direct.py) are neither lost nor multiplied: a
connection whose reconnect fails goes back on the broker's list, and a burst of calls leaves a
few on it and the rest in redis-py's pool for the broker's other commands."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import pytest
from redis.exceptions import ResponseError

from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.redis.direct import KEEP_IDLE
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


async def test_a_burst_keeps_a_few_connections_and_gives_the_rest_to_the_pool(
    redis_url: str,
) -> None:
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    broker = RedisBroker.from_url(f"{redis_url}?namespace={namespace}")
    try:
        await broker.enqueue([TaskMessage(id="a", type="t")])
        await asyncio.gather(*(broker.queue_stats("default") for _ in range(20)))  # 20 at once
        lines = broker._lines
        assert lines is not None
        pool = lines._pool
        made = len(pool._available_connections) + len(pool._in_use_connections)
        assert len(lines._idle) == KEEP_IDLE
        assert len(pool._available_connections) == made - KEEP_IDLE  # the rest, reusable
        # Kept ones have their socket timeout lifted (a call bounds itself); the pool's have it.
        assert {c.socket_timeout for c in lines._idle} == {None}
        assert {c.socket_timeout for c in pool._available_connections} == {10.0}
        assert await broker.list_queues() == ["default"]  # other commands reuse them
        await asyncio.gather(*(broker.queue_stats("default") for _ in range(20)))
        # ...and so do the next burst's calls. redis-py 7.2+ connects outside the pool's lock, so
        # the first burst already opened one connection per call (made == 20); older releases
        # connect one at a time under that lock, so their first burst peaks lower and the second,
        # on open connections, may run a few more calls at once and open those.
        assert made <= len(pool._available_connections) + len(pool._in_use_connections) <= 20
    finally:
        await broker.close()
        await delete_namespace(redis_url, namespace)


async def test_commands_sent_together_reply_in_order_and_an_error_comes_after_all(
    redis_url: str,
) -> None:
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    broker = RedisBroker.from_url(f"{redis_url}?namespace={namespace}")
    key = f"{namespace}:probe"
    try:
        lines = broker._lines
        assert lines is not None
        replies = await lines.call_many(
            [("HSET", key, "a", "1", "b", "2"), ("HMGET", key, "b", "x", "a"), ("HLEN", key)]
        )
        assert replies == [2, [b"2", None, b"1"], 2]
        with pytest.raises(ResponseError):  # LPUSH on a hash: WRONGTYPE, after the others ran
            await lines.call_many([("LPUSH", key, "v"), ("HSET", key, "c", "3")])
        # The connection was read to the end: the next call on it gets its own reply.
        assert await lines.call_many([("HGET", key, "c")]) == [b"3"]
        assert await lines.call("HLEN", key) == 3
    finally:
        await broker.close()
        await delete_namespace(redis_url, namespace)


async def test_an_async_call_whose_reply_never_comes_times_out_and_the_next_works(
    redis_url: str, proxy: FaultProxy
) -> None:
    """The kept connections' own bound on a call (direct.py) still ends a call at the socket
    timeout, drops that connection, and leaves the broker working."""
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    db = urlsplit(redis_url).path or "/0"
    url = f"redis://127.0.0.1:{proxy.port}{db}?namespace={namespace}&socket_timeout=0.3"
    broker = RedisBroker.from_url(url)
    try:
        await broker.enqueue([TaskMessage(id="a", type="t")])
        proxy.blackhole(True)  # the next script goes out and no reply comes back
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BrokerUnavailableError, match="TimeoutError"):
            await broker.enqueue([TaskMessage(id="b", type="t")])
        assert loop.time() - started < 5.0  # the 0.3 s bound, not a hang
        proxy.blackhole(False)
        proxy.reset()  # what the blackhole held back is dropped with the old connections
        await broker.enqueue([TaskMessage(id="c", type="t")])
        stats = await broker.queue_stats("default")
        assert stats.pending in (2, 3)  # "b" may or may not have reached Redis
    finally:
        await broker.close()
        await delete_namespace(redis_url, namespace)


@pytest.mark.parametrize("wait", ["wait_for_tasks", "wait_and_claim"])
async def test_a_blocking_wait_whose_reply_never_comes_ends_at_its_bound(
    redis_url: str, proxy: FaultProxy, wait: str
) -> None:
    """The blocking client has no socket timeout: a BLPOP that never returns (a dead
    connection) ends at the wait plus 5 s, as an error that says so."""
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    db = urlsplit(redis_url).path or "/0"
    broker = RedisBroker.from_url(f"redis://127.0.0.1:{proxy.port}{db}?namespace={namespace}")
    try:
        await broker.claim(["q"], limit=1, lease_s=30)  # scripts loaded, connections made
        proxy.hold_next_request(b"BLPOP")  # it never reaches Redis, so no reply comes
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BrokerUnavailableError, match=r"no reply from Redis within 5\.3 s"):
            if wait == "wait_for_tasks":
                await broker.wait_for_tasks(["q"], 0.3)
            else:
                await broker.wait_and_claim(["q"], limit=1, lease_s=30, timeout_s=0.3)
        assert 5.0 <= loop.time() - started < 15.0
    finally:
        proxy.release()
        await broker.close()
        await delete_namespace(redis_url, namespace)


async def test_a_kept_connection_is_health_checked_only_when_a_check_is_due(
    redis_url: str,
) -> None:
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    broker = RedisBroker.from_url(f"{redis_url}?namespace={namespace}")
    try:
        await broker.enqueue([TaskMessage(id="a", type="t")])
        lines = broker._lines
        assert lines is not None and len(lines._idle) == 1
        conn = lines._idle[0]
        assert conn.health_check_interval  # the broker's clients check every HEALTH_CHECK_S
        pings = 0
        send_ping = conn._send_ping

        async def counted() -> None:
            nonlocal pings
            pings += 1
            await send_ping()

        conn._send_ping = counted  # type: ignore[method-assign]
        await broker.enqueue([TaskMessage(id="b", type="t")])
        assert pings == 0  # checked a moment ago: not due
        conn.next_health_check = -1.0  # the interval has passed
        await broker.enqueue([TaskMessage(id="c", type="t")])
        assert pings == 1
        assert conn.next_health_check > 0  # redis-py's own check ran and set the next one
    finally:
        await broker.close()
        await delete_namespace(redis_url, namespace)
