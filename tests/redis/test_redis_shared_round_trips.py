"""Script calls sharing round trips (``RedisBroker.share_round_trips``, brokers/redis/direct.py):
calls made together go out on one connection, each gets its own reply or error, a call whose
caller is cancelled while it waits is made all the same, and a lost round trip fails every call
in it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.exceptions import ResponseError

from conveyor.brokers.redis import RedisBroker
from conveyor.errors import BrokerUnavailableError
from conveyor.message import Completion, TaskMessage
from faultproxy import FaultProxy
from support import delete_namespace

pytestmark = pytest.mark.redis


@pytest.fixture
async def shared(redis_url: str) -> AsyncIterator[RedisBroker]:
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    broker = RedisBroker.from_url(f"{redis_url}?namespace={namespace}")
    broker.share_round_trips()
    try:
        yield broker
    finally:
        await broker.close()
        await delete_namespace(redis_url, namespace)


async def test_calls_made_together_share_one_connection_and_get_their_own_replies(
    shared: RedisBroker,
) -> None:
    lines = shared._lines
    assert lines is not None and lines.pipelined
    key = f"{shared.namespace}:probe"
    await lines.call("SET", key, "x")
    pool = lines._pool

    outcomes = await asyncio.gather(
        *(lines.call("INCR", f"{key}:{i}") for i in range(10)),
        lines.call("INCR", key),  # not a number: an error for this call only
        lines.call("GET", key),
        return_exceptions=True,
    )

    assert outcomes[:10] == [1] * 10
    assert isinstance(outcomes[10], ResponseError)
    assert outcomes[11] == b"x"
    # Every call went out on the one connection the broker keeps.
    assert len(lines._idle) == 1
    assert len(pool._available_connections) + len(pool._in_use_connections) == 1


async def test_broker_calls_made_together_each_get_their_outcome(shared: RedisBroker) -> None:
    await shared.enqueue([TaskMessage(id=f"t{i}", type="t", queue="q") for i in range(5)])

    claimed, stats, stored = await asyncio.gather(
        shared.claim(["q"], limit=3, lease_s=30),
        shared.queue_stats("q"),
        shared.enqueue([TaskMessage(id="u", type="t", queue="other")]),
    )

    assert [lease.task.id for lease in claimed] == ["t0", "t1", "t2"]
    assert stats.pending + stats.active == 5
    assert [info.id for info in stored] == ["u"]
    done = await shared.complete([Completion(lease=lease) for lease in claimed])
    assert done == [True, True, True]
    assert (await shared.queue_stats("q")).pending == 2


async def test_a_call_whose_caller_is_cancelled_while_it_waits_is_still_made(
    shared: RedisBroker,
) -> None:
    lines = shared._lines
    assert lines is not None
    key = f"{shared.namespace}:cancelled"
    first = asyncio.create_task(lines.call("SET", key, "1"))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(lines.call("INCR", key))
    await asyncio.sleep(0)  # both wait for their round trip to go out
    waiting.cancel()

    assert await first == b"OK"
    assert await lines.call("GET", key) == b"2"  # the INCR stood
    assert waiting.cancelled()


async def test_a_lost_round_trip_fails_every_call_in_it_and_the_next_works(
    redis_url: str, proxy: FaultProxy
) -> None:
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    db = urlsplit(redis_url).path or "/0"
    url = f"redis://127.0.0.1:{proxy.port}{db}?namespace={namespace}&socket_timeout=0.3"
    broker = RedisBroker.from_url(url)
    broker.share_round_trips()
    try:
        await broker.enqueue([TaskMessage(id="a", type="t")])
        proxy.blackhole(True)  # the next round trip goes out and no reply comes back
        outcomes = await asyncio.gather(
            broker.queue_stats("default"),
            broker.claim(["default"], limit=1, lease_s=30),
            return_exceptions=True,
        )
        assert all(isinstance(o, BrokerUnavailableError) for o in outcomes), outcomes
        proxy.blackhole(False)
        proxy.reset()
        await broker.enqueue([TaskMessage(id="c", type="t")])
        stats = await broker.queue_stats("default")
        assert stats.pending + stats.active == 2
    finally:
        await broker.close()
        await delete_namespace(redis_url, namespace)
