"""Completion: deletion or retention with results, purge, successors in the same step."""

from __future__ import annotations

import pytest

from conformance.factories import QUEUE, claim_ids, claim_one, enqueue_one, is_utc, msg
from conveyor.brokers.protocol import Broker
from conveyor.errors import DuplicateTaskError, TaskIdConflictError, TaskNotFoundError
from conveyor.message import Completion, TaskState, encode_json
from support import eventually


async def test_completion_without_retention_deletes_the_task(broker: Broker) -> None:
    info = await enqueue_one(broker)
    lease = await claim_one(broker)

    assert await broker.complete([Completion(lease=lease, result=encode_json(1))]) == [True]

    with pytest.raises(TaskNotFoundError):
        await broker.get_task(QUEUE, info.id)
    stats = await broker.queue_stats(QUEUE)
    assert (stats.active, stats.completed, stats.processed_today, stats.failed_today) == (
        0,
        0,
        1,
        0,
    )


async def test_completion_with_retention_keeps_the_result(broker: Broker) -> None:
    info = await enqueue_one(broker, retention_s=600)
    lease = await claim_one(broker)
    result = encode_json({"sum": 3, "items": ["a", "é"]})

    assert await broker.complete([Completion(lease=lease, result=result)]) == [True]

    task = await broker.get_task(QUEUE, info.id)
    assert task.state is TaskState.COMPLETED
    assert task.result == {"sum": 3, "items": ["a", "é"]}
    assert task.raw_result == result
    assert is_utc(task.completed_at)
    assert task.completed_at is not None and task.enqueued_at is not None
    assert task.completed_at >= task.enqueued_at
    assert [t.id for t in await broker.list_tasks(QUEUE, TaskState.COMPLETED)] == [info.id]
    assert (await broker.queue_stats(QUEUE)).completed == 1


async def test_completion_without_result_keeps_none(broker: Broker) -> None:
    info = await enqueue_one(broker, retention_s=600)

    assert await broker.complete([Completion(lease=await claim_one(broker))]) == [True]

    task = await broker.get_task(QUEUE, info.id)
    assert (task.raw_result, task.result) == (None, None)


async def test_several_completions_in_one_call(broker: Broker) -> None:
    await broker.enqueue([msg(retention_s=600) for _ in range(3)])
    leases = await broker.claim([QUEUE], limit=3, lease_s=30)

    done = await broker.complete([Completion(lease=lease) for lease in leases])

    assert done == [True, True, True]
    assert (await broker.queue_stats(QUEUE)).completed == 3


async def test_purge_keeps_tasks_within_retention(broker: Broker) -> None:
    info = await enqueue_one(broker, retention_s=600)
    assert await broker.complete([Completion(lease=await claim_one(broker))]) == [True]

    assert await broker.purge_expired() == 0
    assert (await broker.get_task(QUEUE, info.id)).state is TaskState.COMPLETED


async def test_purge_deletes_completed_tasks_past_retention(broker: Broker) -> None:
    info = await enqueue_one(broker, retention_s=0.2)
    kept = await enqueue_one(broker, retention_s=600)
    leases = await broker.claim([QUEUE], limit=2, lease_s=30)
    assert await broker.complete([Completion(lease=lease) for lease in leases]) == [True, True]

    purged = 0

    async def purged_one() -> bool:
        nonlocal purged
        purged += await broker.purge_expired()
        return purged >= 1

    await eventually(purged_one, within=3.0)
    with pytest.raises(TaskNotFoundError):
        await broker.get_task(QUEUE, info.id)
    assert (await broker.get_task(QUEUE, kept.id)).state is TaskState.COMPLETED


async def test_successors_are_enqueued_with_the_completion(broker: Broker) -> None:
    parent = await enqueue_one(broker)
    lease = await claim_one(broker)
    now_child = msg(payload="next")
    other_queue_child = msg(queue="elsewhere")
    later_child = msg(process_in_s=3600)

    done = await broker.complete(
        [Completion(lease=lease, successors=(now_child, other_queue_child, later_child))]
    )

    assert done == [True]
    with pytest.raises(TaskNotFoundError):
        await broker.get_task(QUEUE, parent.id)
    assert (await broker.get_task(QUEUE, now_child.id)).payload == "next"
    assert (await broker.get_task("elsewhere", other_queue_child.id)).state is TaskState.PENDING
    assert (await broker.get_task(QUEUE, later_child.id)).state is TaskState.SCHEDULED
    assert "elsewhere" in await broker.list_queues()
    assert await claim_ids(broker, [QUEUE]) == [now_child.id]


async def test_stale_completion_enqueues_no_successors(broker: Broker) -> None:
    await enqueue_one(broker)
    lease = await claim_one(broker)
    await broker.release(lease)
    child = msg()

    assert await broker.complete([Completion(lease=lease, successors=(child,))]) == [False]

    with pytest.raises(TaskNotFoundError):
        await broker.get_task(QUEUE, child.id)


async def test_conflicting_successor_leaves_the_task_active(broker: Broker) -> None:
    existing = await enqueue_one(broker, queue="kids")
    parent = await enqueue_one(broker)
    lease = await claim_one(broker)
    fresh = msg(queue="kids")

    with pytest.raises(TaskIdConflictError):
        await broker.complete(
            [Completion(lease=lease, successors=(fresh, msg(queue="kids", id=existing.id)))]
        )

    assert (await broker.get_task(QUEUE, parent.id)).state is TaskState.ACTIVE
    with pytest.raises(TaskNotFoundError):
        await broker.get_task("kids", fresh.id)
    assert (await broker.queue_stats(QUEUE)).processed_today == 0
    assert await broker.complete([Completion(lease=lease)]) == [True]


async def test_duplicate_unique_successor_leaves_the_task_active(broker: Broker) -> None:
    await enqueue_one(broker, queue="kids", unique_key="once", unique_ttl_s=600)
    parent = await enqueue_one(broker)
    lease = await claim_one(broker)

    with pytest.raises(DuplicateTaskError):
        await broker.complete(
            [Completion(lease=lease, successors=(msg(queue="kids", unique_key="once"),))]
        )

    assert (await broker.get_task(QUEUE, parent.id)).state is TaskState.ACTIVE


async def test_raw_result_bytes_are_stored_exactly(broker: Broker) -> None:
    info = await enqueue_one(broker, retention_s=600)
    raw = b"\x00\xff\xfe not utf-8 \r\n" + bytes(range(256))

    assert await broker.complete([Completion(lease=await claim_one(broker), result=raw)]) == [True]

    assert (await broker.get_task(QUEUE, info.id)).raw_result == raw
