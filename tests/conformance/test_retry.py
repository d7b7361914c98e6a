"""Failed attempts: retry (with its delay), archive, and what each records."""

from __future__ import annotations

import time

from conformance.factories import QUEUE, claim_ids, claim_one, enqueue_one, is_utc
from conveyor.brokers.protocol import Broker
from conveyor.message import Completion, TaskState
from support import eventually


async def test_retry_records_the_failure_and_waits(broker: Broker) -> None:
    info = await enqueue_one(broker)
    lease = await claim_one(broker)
    before = time.time()

    await broker.retry(lease, error="ValueError: boom", delay_s=3600)

    task = await broker.get_task(QUEUE, info.id)
    assert task.state is TaskState.RETRY
    assert (task.retried, task.last_error) == (1, "ValueError: boom")
    assert is_utc(task.last_failed_at) and is_utc(task.next_process_at)
    assert task.next_process_at is not None
    assert task.next_process_at.timestamp() > before + 3000  # loose: broker clock
    assert await broker.claim([QUEUE], limit=1, lease_s=30) == []
    stats = await broker.queue_stats(QUEUE)
    assert (stats.retry, stats.active, stats.processed_today, stats.failed_today) == (1, 0, 1, 1)


async def test_retry_is_not_claimed_before_its_delay(broker: Broker) -> None:
    info = await enqueue_one(broker)
    await broker.retry(await claim_one(broker), error="boom", delay_s=0.4)
    retried = await broker.get_task(QUEUE, info.id)
    assert retried.next_process_at is not None

    assert await broker.claim([QUEUE], limit=1, lease_s=30) == []

    leases = await eventually(lambda: broker.claim([QUEUE], limit=1, lease_s=30), within=3.0)
    assert leases[0].task.id == info.id
    assert leases[0].task.retried == 1
    assert leases[0].expires_at - 30 >= retried.next_process_at.timestamp() - 0.001


async def test_retry_with_no_delay_is_claimable_at_once(broker: Broker) -> None:
    info = await enqueue_one(broker)
    await broker.retry(await claim_one(broker), error="boom", delay_s=0)

    assert await claim_ids(broker, [QUEUE]) == [info.id]


async def test_retried_counts_each_failed_attempt(broker: Broker) -> None:
    info = await enqueue_one(broker)
    for attempt in range(1, 4):
        lease = await claim_one(broker)
        assert lease.task.retried == attempt - 1
        await broker.retry(lease, error=f"attempt {attempt}", delay_s=0)

    task = await broker.get_task(QUEUE, info.id)
    assert (task.retried, task.last_error) == (3, "attempt 3")
    stats = await broker.queue_stats(QUEUE)
    assert (stats.processed_today, stats.failed_today) == (3, 3)


async def test_archive_records_the_failure_and_parks_the_task(broker: Broker) -> None:
    info = await enqueue_one(broker, max_retry=5)
    lease = await claim_one(broker)

    await broker.archive(lease, error="SkipRetry: bad input")

    task = await broker.get_task(QUEUE, info.id)
    assert task.state is TaskState.ARCHIVED
    assert (task.retried, task.last_error) == (1, "SkipRetry: bad input")
    assert is_utc(task.last_failed_at)
    assert await broker.claim([QUEUE], limit=1, lease_s=30) == []
    assert [t.id for t in await broker.list_tasks(QUEUE, TaskState.ARCHIVED)] == [info.id]
    stats = await broker.queue_stats(QUEUE)
    assert (stats.archived, stats.processed_today, stats.failed_today) == (1, 1, 1)


async def test_release_counts_no_failure(broker: Broker) -> None:
    info = await enqueue_one(broker)

    await broker.release(await claim_one(broker))

    task = await broker.get_task(QUEUE, info.id)
    assert (task.state, task.retried, task.last_error) == (TaskState.PENDING, 0, None)
    stats = await broker.queue_stats(QUEUE)
    assert (stats.pending, stats.processed_today, stats.failed_today) == (1, 0, 0)


async def test_failed_then_completed_task_keeps_its_history(broker: Broker) -> None:
    info = await enqueue_one(broker, retention_s=600)
    await broker.retry(await claim_one(broker), error="first", delay_s=0)

    assert await broker.complete([Completion(lease=await claim_one(broker))]) == [True]

    task = await broker.get_task(QUEUE, info.id)
    assert (task.state, task.retried, task.last_error) == (TaskState.COMPLETED, 1, "first")
    stats = await broker.queue_stats(QUEUE)
    assert (stats.processed_today, stats.failed_today) == (2, 1)


async def test_retried_task_queues_behind_tasks_that_were_ready_earlier(broker: Broker) -> None:
    first = await enqueue_one(broker)
    second = await enqueue_one(broker)
    lease = await claim_one(broker)
    assert lease.task.id == first.id

    await broker.retry(lease, error="boom", delay_s=0)

    assert await claim_ids(broker, [QUEUE]) == [second.id, first.id]
