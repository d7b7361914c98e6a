"""RedisBroker.wait_and_claim: the idle wait and the claim in one step (BLPOP + claim pipelined).

Held to what ``wait_for_tasks`` then ``claim`` would do, plus its own promise: cancelling it
gives back whatever it claimed. The tests count the clients blocked in BLPOP, so they run on a
private redis-server of their own, where no other client can be blocked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_servers import Fleet, namespaced_broker, server

from conveyor.brokers.protocol import WaitAndClaim
from conveyor.brokers.redis import RedisBroker
from conveyor.message import Lease, TaskMessage, TaskState, new_task_id

pytestmark = pytest.mark.redis

QUEUE = "waits"
LONG_WAIT_S = 5.0
PROMPT_S = 2.0
LEASE_S = 30.0


@pytest.fixture(scope="module")
def private_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with Fleet() as fleet:
        process = fleet.add(server(tmp_path_factory.mktemp("wait-and-claim")))
        yield f"redis://127.0.0.1:{process.port}/0"


@pytest.fixture
async def broker(private_url: str) -> AsyncIterator[RedisBroker]:
    async with namespaced_broker(private_url) as instance:
        yield instance


def _msg(queue: str = QUEUE, **fields: Any) -> TaskMessage:
    return TaskMessage(id=str(new_task_id()), type="t", queue=queue, **fields)


async def _blocked_clients(url: str) -> int:
    raw = aioredis.Redis.from_url(url)
    try:
        return sum(1 for c in await raw.client_list() if c.get("cmd") == "blpop")
    finally:
        await raw.aclose()


async def _wait_until_blocked(url: str, before: int) -> None:
    """Until one more client sits in BLPOP than ``before`` (the waiter reached its wait)."""
    deadline = time.monotonic() + PROMPT_S
    while await _blocked_clients(url) <= before:
        assert time.monotonic() < deadline, "the waiter never reached its BLPOP"
        await asyncio.sleep(0.005)


async def _start(
    broker: RedisBroker, url: str, queues: list[str], *, limit: int = 10
) -> asyncio.Task[list[Lease]]:
    before = await _blocked_clients(url)
    waiter = asyncio.create_task(
        broker.wait_and_claim(queues, limit=limit, lease_s=LEASE_S, timeout_s=LONG_WAIT_S)
    )
    await _wait_until_blocked(url, before)
    return waiter


async def _state(broker: RedisBroker, task_id: str, queue: str = QUEUE) -> TaskState:
    return (await broker.get_task(queue, task_id)).state


def test_the_redis_broker_offers_it() -> None:
    assert issubclass(RedisBroker, WaitAndClaim)


async def test_a_task_enqueued_during_the_wait_comes_back_claimed(
    broker: RedisBroker, private_url: str
) -> None:
    waiter = await _start(broker, private_url, ["elsewhere", QUEUE])

    [info] = await broker.enqueue([_msg()])

    [lease] = await asyncio.wait_for(waiter, PROMPT_S)
    assert lease.task.id == info.id
    assert await _state(broker, info.id) is TaskState.ACTIVE


async def test_ready_tasks_are_claimed_at_once_up_to_the_limit(broker: RedisBroker) -> None:
    infos = await broker.enqueue([_msg() for _ in range(5)])

    leases = await asyncio.wait_for(
        broker.wait_and_claim([QUEUE], limit=2, lease_s=LEASE_S, timeout_s=LONG_WAIT_S), PROMPT_S
    )

    assert [le.task.id for le in leases] == [i.id for i in infos[:2]]
    assert [await _state(broker, i.id) for i in infos[2:]] == [TaskState.PENDING] * 3


async def test_nothing_comes_back_at_the_timeout_when_nothing_is_ready(
    broker: RedisBroker,
) -> None:
    started = time.monotonic()

    leases = await broker.wait_and_claim([QUEUE], limit=10, lease_s=LEASE_S, timeout_s=0.2)

    assert leases == []
    assert time.monotonic() - started >= 0.15


async def test_a_scheduled_task_falling_due_is_claimed_within_the_wait(
    broker: RedisBroker,
) -> None:
    [info] = await broker.enqueue([_msg(process_in_s=0.3)])

    leases = await asyncio.wait_for(
        broker.wait_and_claim([QUEUE], limit=10, lease_s=LEASE_S, timeout_s=LONG_WAIT_S), PROMPT_S
    )

    assert [le.task.id for le in leases] == [info.id]


async def test_a_paused_queue_gives_nothing(broker: RedisBroker) -> None:
    await broker.pause_queue(QUEUE)
    [info] = await broker.enqueue([_msg()])

    leases = await broker.wait_and_claim([QUEUE], limit=10, lease_s=LEASE_S, timeout_s=0.2)

    assert leases == []
    assert await _state(broker, info.id) is TaskState.PENDING


async def test_cancelling_the_wait_ends_its_blpop_and_leaves_no_key(
    broker: RedisBroker, private_url: str
) -> None:
    before = await _blocked_clients(private_url)
    waiter = await _start(broker, private_url, [QUEUE])

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert await _blocked_clients(private_url) == before
    raw = aioredis.Redis.from_url(private_url)
    try:
        assert await raw.exists(broker._waiter_key) == 0
    finally:
        await raw.aclose()
    [info] = await broker.enqueue([_msg()])
    assert await _state(broker, info.id) is TaskState.PENDING


async def test_cancelling_right_after_a_wake_up_gives_the_claimed_task_back(
    broker: RedisBroker, private_url: str
) -> None:
    # The enqueue's reply comes after the server has already run the pipelined claim, so the
    # cancel lands while the claimed task is on its way back: it must be released, not leaked
    # as ACTIVE until its lease lapses.
    for _ in range(10):
        waiter = await _start(broker, private_url, [QUEUE])
        [info] = await broker.enqueue([_msg()])
        waiter.cancel()
        try:
            leases = await waiter
        except asyncio.CancelledError:
            task = await broker.get_task(QUEUE, info.id)
            assert task.state is TaskState.PENDING
            assert task.retried == 0
        else:  # the wait had already finished: the caller holds the lease
            assert [le.task.id for le in leases] == [info.id]
            await broker.release(leases[0])
        [lease] = await broker.claim([QUEUE], limit=10, lease_s=LEASE_S)
        await broker.archive(lease, error="done with it")


async def test_a_server_that_lost_its_scripts_still_claims(tmp_path: Path) -> None:
    process = server(tmp_path / "redis")
    try:
        url = f"redis://127.0.0.1:{process.port}/0"
        async with namespaced_broker(url) as broker:
            await broker.enqueue([_msg("warmup")])  # scripts loaded
            waiter = await _start(broker, url, [QUEUE])
            raw = aioredis.Redis.from_url(url)
            try:
                await raw.script_flush()
            finally:
                await raw.aclose()
            [info] = await broker.enqueue([_msg()])

            [lease] = await asyncio.wait_for(waiter, PROMPT_S)

            assert lease.task.id == info.id
    finally:
        process.stop()
