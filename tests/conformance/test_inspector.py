"""Inspector operations: get, list, delete, run and archive (one task or a whole state)."""

from __future__ import annotations

import pytest

from conformance.factories import (
    QUEUE,
    claim_ids,
    claim_one,
    enqueue_one,
    msg,
    new_id,
    one_in_each_state,
)
from conveyor.brokers.protocol import Broker
from conveyor.errors import TaskNotFoundError
from conveyor.message import Completion, TaskState


async def test_get_task_reports_missing_task_with_attributes(broker: Broker) -> None:
    missing = new_id()

    with pytest.raises(TaskNotFoundError) as caught:
        await broker.get_task(QUEUE, missing)

    assert (caught.value.task_id, caught.value.queue) == (missing, QUEUE)


async def test_get_task_is_scoped_to_its_queue(broker: Broker) -> None:
    info = await enqueue_one(broker, queue="here")

    with pytest.raises(TaskNotFoundError):
        await broker.get_task("there", info.id)


async def test_list_tasks_by_state_in_run_order_with_paging(broker: Broker) -> None:
    pending = [m.id for m in await broker.enqueue([msg(payload=i) for i in range(5)])]
    far = await enqueue_one(broker, process_in_s=7200)
    near = await enqueue_one(broker, process_in_s=3600)

    listed = await broker.list_tasks(QUEUE, TaskState.PENDING)
    assert [t.id for t in listed] == pending
    assert all(t.state is TaskState.PENDING for t in listed)
    page = await broker.list_tasks(QUEUE, TaskState.PENDING, offset=1, limit=2)
    assert [t.id for t in page] == pending[1:3]
    assert await broker.list_tasks(QUEUE, TaskState.PENDING, offset=5) == []
    scheduled = await broker.list_tasks(QUEUE, TaskState.SCHEDULED)
    assert [t.id for t in scheduled] == [near.id, far.id]
    assert await broker.list_tasks("no-such-queue", TaskState.PENDING) == []


async def test_list_tasks_shows_active_tasks(broker: Broker) -> None:
    info = await enqueue_one(broker)
    await claim_one(broker)

    [active] = await broker.list_tasks(QUEUE, TaskState.ACTIVE)

    assert (active.id, active.state) == (info.id, TaskState.ACTIVE)


@pytest.mark.parametrize(
    "state",
    [
        TaskState.PENDING,
        TaskState.SCHEDULED,
        TaskState.RETRY,
        TaskState.ARCHIVED,
        TaskState.COMPLETED,
    ],
)
async def test_delete_task_removes_an_inactive_task(broker: Broker, state: TaskState) -> None:
    ids = await one_in_each_state(broker)

    await broker.delete_task(QUEUE, ids[state])

    with pytest.raises(TaskNotFoundError):
        await broker.get_task(QUEUE, ids[state])
    assert await broker.list_tasks(QUEUE, state) == []


async def test_delete_task_refuses_an_active_task(broker: Broker) -> None:
    ids = await one_in_each_state(broker)

    with pytest.raises(TaskNotFoundError) as caught:
        await broker.delete_task(QUEUE, ids[TaskState.ACTIVE])

    assert caught.value.task_id == ids[TaskState.ACTIVE]
    assert (await broker.get_task(QUEUE, ids[TaskState.ACTIVE])).state is TaskState.ACTIVE


async def test_single_task_operations_on_a_missing_task_raise(broker: Broker) -> None:
    for operation in (broker.delete_task, broker.run_task, broker.archive_task):
        with pytest.raises(TaskNotFoundError):
            await operation(QUEUE, new_id())


@pytest.mark.parametrize("state", [TaskState.SCHEDULED, TaskState.RETRY, TaskState.ARCHIVED])
async def test_run_task_makes_it_pending_now(broker: Broker, state: TaskState) -> None:
    ids = await one_in_each_state(broker)
    before = await broker.get_task(QUEUE, ids[state])

    await broker.run_task(QUEUE, ids[state])

    after = await broker.get_task(QUEUE, ids[state])
    assert after.state is TaskState.PENDING
    assert after.retried == before.retried
    claimed = await claim_ids(broker, [QUEUE])
    assert set(claimed) == {ids[TaskState.PENDING], ids[state]}


@pytest.mark.parametrize("state", [TaskState.PENDING, TaskState.ACTIVE, TaskState.COMPLETED])
async def test_run_task_refuses_other_states(broker: Broker, state: TaskState) -> None:
    ids = await one_in_each_state(broker)

    with pytest.raises(TaskNotFoundError):
        await broker.run_task(QUEUE, ids[state])

    assert (await broker.get_task(QUEUE, ids[state])).state is state


@pytest.mark.parametrize("state", [TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY])
async def test_archive_task_parks_a_waiting_task(broker: Broker, state: TaskState) -> None:
    ids = await one_in_each_state(broker)

    await broker.archive_task(QUEUE, ids[state])

    assert (await broker.get_task(QUEUE, ids[state])).state is TaskState.ARCHIVED
    assert ids[state] not in await claim_ids(broker, [QUEUE])
    assert (await broker.queue_stats(QUEUE)).archived == 2


@pytest.mark.parametrize("state", [TaskState.ACTIVE, TaskState.ARCHIVED, TaskState.COMPLETED])
async def test_archive_task_refuses_other_states(broker: Broker, state: TaskState) -> None:
    ids = await one_in_each_state(broker)

    with pytest.raises(TaskNotFoundError):
        await broker.archive_task(QUEUE, ids[state])

    assert (await broker.get_task(QUEUE, ids[state])).state is state


async def test_inspector_archive_counts_no_failure(broker: Broker) -> None:
    info = await enqueue_one(broker)

    await broker.archive_task(QUEUE, info.id)

    task = await broker.get_task(QUEUE, info.id)
    assert (task.retried, task.last_error) == (0, None)
    assert (await broker.queue_stats(QUEUE)).failed_today == 0


async def test_archived_task_run_again_can_complete(broker: Broker) -> None:
    info = await enqueue_one(broker, retention_s=600)
    await broker.archive(await claim_one(broker), error="boom")
    await broker.run_task(QUEUE, info.id)

    assert await broker.complete([Completion(lease=await claim_one(broker))]) == [True]

    assert (await broker.get_task(QUEUE, info.id)).state is TaskState.COMPLETED


async def test_delete_tasks_deletes_a_whole_state(broker: Broker) -> None:
    await broker.enqueue([msg(process_in_s=3600) for _ in range(3)])
    pending = await enqueue_one(broker)
    await enqueue_one(broker, queue="untouched", process_in_s=3600)

    assert await broker.delete_tasks(QUEUE, TaskState.SCHEDULED) == 3

    stats = await broker.queue_stats(QUEUE)
    assert (stats.scheduled, stats.pending) == (0, 1)
    assert (await broker.get_task(QUEUE, pending.id)).state is TaskState.PENDING
    assert (await broker.queue_stats("untouched")).scheduled == 1
    assert await broker.delete_tasks(QUEUE, TaskState.SCHEDULED) == 0


async def test_delete_tasks_never_deletes_active_tasks(broker: Broker) -> None:
    ids = await one_in_each_state(broker)

    assert await broker.delete_tasks(QUEUE, TaskState.ACTIVE) == 0

    assert (await broker.get_task(QUEUE, ids[TaskState.ACTIVE])).state is TaskState.ACTIVE


async def test_delete_tasks_clears_completed_and_archived(broker: Broker) -> None:
    await one_in_each_state(broker)

    assert await broker.delete_tasks(QUEUE, TaskState.COMPLETED) == 1
    assert await broker.delete_tasks(QUEUE, TaskState.ARCHIVED) == 1

    stats = await broker.queue_stats(QUEUE)
    assert (stats.completed, stats.archived, stats.active) == (0, 0, 1)


async def test_run_tasks_makes_a_whole_state_pending(broker: Broker) -> None:
    scheduled = [m.id for m in await broker.enqueue([msg(process_in_s=3600) for _ in range(3)])]

    assert await broker.run_tasks(QUEUE, TaskState.SCHEDULED) == 3

    assert (await broker.queue_stats(QUEUE)).pending == 3
    assert set(await claim_ids(broker, [QUEUE])) == set(scheduled)


async def test_run_tasks_on_retry_and_archived(broker: Broker) -> None:
    ids = await one_in_each_state(broker)

    assert await broker.run_tasks(QUEUE, TaskState.RETRY) == 1
    assert await broker.run_tasks(QUEUE, TaskState.ARCHIVED) == 1

    for state in (TaskState.RETRY, TaskState.ARCHIVED):
        assert (await broker.get_task(QUEUE, ids[state])).state is TaskState.PENDING


@pytest.mark.parametrize("state", [TaskState.PENDING, TaskState.ACTIVE, TaskState.COMPLETED])
async def test_run_tasks_changes_nothing_in_other_states(broker: Broker, state: TaskState) -> None:
    ids = await one_in_each_state(broker)

    assert await broker.run_tasks(QUEUE, state) == 0

    assert (await broker.get_task(QUEUE, ids[state])).state is state


async def test_archive_tasks_parks_a_whole_state(broker: Broker) -> None:
    await broker.enqueue([msg() for _ in range(4)])
    scheduled = await enqueue_one(broker, process_in_s=3600)

    assert await broker.archive_tasks(QUEUE, TaskState.PENDING) == 4

    stats = await broker.queue_stats(QUEUE)
    assert (stats.pending, stats.archived, stats.scheduled) == (0, 4, 1)
    assert await broker.claim([QUEUE], limit=10, lease_s=30) == []
    assert (await broker.get_task(QUEUE, scheduled.id)).state is TaskState.SCHEDULED


@pytest.mark.parametrize("state", [TaskState.ACTIVE, TaskState.ARCHIVED, TaskState.COMPLETED])
async def test_archive_tasks_changes_nothing_in_other_states(
    broker: Broker, state: TaskState
) -> None:
    ids = await one_in_each_state(broker)

    assert await broker.archive_tasks(QUEUE, state) == 0

    assert (await broker.get_task(QUEUE, ids[state])).state is state
