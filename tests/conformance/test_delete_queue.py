"""delete_queue: refusals (not empty, in use), what a forced delete removes, and what it keeps."""

from __future__ import annotations

import dataclasses

import pytest

from conformance.factories import QUEUE, claim_one, enqueue_one, msg, one_in_each_state
from conveyor.brokers.protocol import Broker
from conveyor.errors import DuplicateTaskError, QueueInUseError, QueueNotEmptyError
from conveyor.message import Completion, QueueStats, TaskState

OTHER = "other"
SETTLED_AND_WAITING = (
    TaskState.PENDING,
    TaskState.SCHEDULED,
    TaskState.RETRY,
    TaskState.ARCHIVED,
    TaskState.COMPLETED,
)


def empty_stats(queue: str) -> QueueStats:
    return QueueStats(
        queue=queue,
        pending=0,
        scheduled=0,
        active=0,
        retry=0,
        archived=0,
        completed=0,
        paused=False,
        processed_today=0,
        failed_today=0,
    )


async def test_an_empty_queue_is_deleted_and_no_longer_listed(broker: Broker) -> None:
    await broker.pause_queue(QUEUE)
    assert QUEUE in await broker.list_queues()

    await broker.delete_queue(QUEUE, force=False)

    assert QUEUE not in await broker.list_queues()
    assert await broker.queue_stats(QUEUE) == empty_stats(QUEUE)


async def test_a_queue_emptied_by_its_worker_is_deleted_without_force(broker: Broker) -> None:
    await enqueue_one(broker)
    assert await broker.complete([Completion(lease=await claim_one(broker))]) == [True]

    await broker.delete_queue(QUEUE, force=False)

    assert await broker.list_queues() == []
    assert await broker.queue_stats(QUEUE) == empty_stats(QUEUE)


async def test_deleting_an_unknown_queue_does_nothing(broker: Broker) -> None:
    await enqueue_one(broker, queue=OTHER)

    await broker.delete_queue("never-used", force=False)
    await broker.delete_queue("never-used", force=True)

    assert await broker.list_queues() == [OTHER]
    assert (await broker.queue_stats(OTHER)).pending == 1


@pytest.mark.parametrize("state", SETTLED_AND_WAITING)
async def test_without_force_any_task_refuses_and_nothing_is_lost(
    broker: Broker, state: TaskState
) -> None:
    ids = await one_in_each_state(broker, active=False)
    for other in SETTLED_AND_WAITING:  # leave just the one task in `state`
        if other is not state:
            await broker.delete_task(QUEUE, ids[other])
    before = await broker.queue_stats(QUEUE)

    with pytest.raises(QueueNotEmptyError) as caught:
        await broker.delete_queue(QUEUE, force=False)

    assert (caught.value.queue, caught.value.tasks) == (QUEUE, 1)
    assert (await broker.get_task(QUEUE, ids[state])).state is state
    assert await broker.queue_stats(QUEUE) == before
    assert QUEUE in await broker.list_queues()


async def test_without_force_an_active_task_is_reported_as_not_empty(broker: Broker) -> None:
    await enqueue_one(broker)
    await claim_one(broker)

    with pytest.raises(QueueNotEmptyError) as caught:
        await broker.delete_queue(QUEUE, force=False)

    assert caught.value.tasks == 1


async def test_force_deletes_tasks_in_every_state_but_active(broker: Broker) -> None:
    await one_in_each_state(broker, active=False)

    await broker.delete_queue(QUEUE, force=True)

    assert QUEUE not in await broker.list_queues()
    assert await broker.queue_stats(QUEUE) == empty_stats(QUEUE)
    for state in TaskState:
        assert await broker.list_tasks(QUEUE, state) == []
    assert await broker.claim([QUEUE], limit=10, lease_s=30) == []


@pytest.mark.parametrize("state", SETTLED_AND_WAITING)
async def test_force_releases_unique_locks(broker: Broker, state: TaskState) -> None:
    lock = {"unique_key": "k", "unique_ttl_s": None}
    if state is TaskState.SCHEDULED:
        await broker.enqueue([msg(**lock, process_in_s=3600)])
    else:
        await broker.enqueue([msg(**lock, retention_s=600)])
    if state in (TaskState.RETRY, TaskState.ARCHIVED, TaskState.COMPLETED):
        lease = await claim_one(broker)
        if state is TaskState.RETRY:
            await broker.retry(lease, error="boom", delay_s=3600)
        elif state is TaskState.ARCHIVED:
            await broker.archive(lease, error="boom")
        else:  # completing frees the lock; hold it again with a second, pending task
            assert await broker.complete([Completion(lease=lease)]) == [True]
            await broker.enqueue([msg(**lock)])
    with pytest.raises(DuplicateTaskError):
        await broker.enqueue([msg(unique_key="k")])

    await broker.delete_queue(QUEUE, force=True)

    [again] = await broker.enqueue([msg(unique_key="k")])
    assert again.state is TaskState.PENDING
    assert (await broker.queue_stats(QUEUE)).size == 1


async def test_force_deletes_a_queue_whose_unique_lock_has_a_ttl(broker: Broker) -> None:
    await broker.enqueue([msg(unique_key="k", unique_ttl_s=3600)])

    await broker.delete_queue(QUEUE, force=True)

    [again] = await broker.enqueue([msg(unique_key="k", unique_ttl_s=3600)])
    assert again.state is TaskState.PENDING


async def test_an_active_task_refuses_even_with_force_and_nothing_is_deleted(
    broker: Broker,
) -> None:
    ids = await one_in_each_state(broker, active=False)
    active = await enqueue_one(broker, unique_key="held", unique_ttl_s=None)
    await broker.delete_task(QUEUE, ids[TaskState.PENDING])  # so the claim takes `active`
    lease = await claim_one(broker)
    assert lease.task.id == active.id
    before = await broker.queue_stats(QUEUE)

    with pytest.raises(QueueInUseError) as caught:
        await broker.delete_queue(QUEUE, force=True)

    assert (caught.value.queue, caught.value.active) == (QUEUE, 1)
    assert await broker.queue_stats(QUEUE) == before
    assert QUEUE in await broker.list_queues()
    for state, task_id in ids.items():
        if state is not TaskState.PENDING:
            assert (await broker.get_task(QUEUE, task_id)).state is state
    with pytest.raises(DuplicateTaskError):  # the unique lock is still held
        await broker.enqueue([msg(unique_key="held")])
    # The lease contract holds: the worker still completes its task.
    assert await broker.complete([Completion(lease=lease)]) == [True]
    await broker.delete_queue(QUEUE, force=True)
    assert QUEUE not in await broker.list_queues()


async def test_counters_and_pause_reset_for_a_queue_recreated_later(broker: Broker) -> None:
    await broker.enqueue([msg(), msg()])
    assert await broker.complete([Completion(lease=await claim_one(broker))]) == [True]
    await broker.archive(await claim_one(broker), error="boom")
    await broker.pause_queue(QUEUE)
    stats = await broker.queue_stats(QUEUE)
    assert (stats.processed_today, stats.failed_today, stats.paused) == (2, 1, True)

    await broker.delete_queue(QUEUE, force=True)
    recreated = await enqueue_one(broker)

    assert await broker.list_queues() == [QUEUE]
    assert await broker.queue_stats(QUEUE) == dataclasses.replace(empty_stats(QUEUE), pending=1)
    lease = await claim_one(broker)  # unpaused: the re-created queue is claimable
    assert lease.task.id == recreated.id


async def test_a_task_recreated_under_the_same_id_never_reuses_a_token(broker: Broker) -> None:
    first = await enqueue_one(broker)
    old = await claim_one(broker)
    await broker.retry(old, error="boom", delay_s=3600)  # a zombie may still hold `old`

    await broker.delete_queue(QUEUE, force=True)
    await broker.enqueue([msg(id=first.id)])
    new = await claim_one(broker)

    assert new.token != old.token
    assert await broker.complete([Completion(lease=old)]) == [False]
    assert (await broker.get_task(QUEUE, first.id)).state is TaskState.ACTIVE
    assert await broker.complete([Completion(lease=new)]) == [True]


async def test_other_queues_are_untouched(broker: Broker) -> None:
    await one_in_each_state(broker, active=False)
    kept = await broker.enqueue(
        [msg(queue=OTHER), msg(queue=OTHER), msg(queue=OTHER, unique_key="k", unique_ttl_s=None)]
    )
    assert await broker.complete([Completion(lease=await claim_one(broker, OTHER))]) == [True]
    await broker.pause_queue(OTHER)
    before = await broker.queue_stats(OTHER)

    await broker.delete_queue(QUEUE, force=True)

    assert await broker.list_queues() == [OTHER]
    assert await broker.queue_stats(OTHER) == before
    assert (await broker.get_task(OTHER, kept[1].id)).state is TaskState.PENDING
    assert (await broker.get_task(OTHER, kept[2].id)).state is TaskState.PENDING
    with pytest.raises(DuplicateTaskError):
        await broker.enqueue([msg(queue=OTHER, unique_key="k")])
