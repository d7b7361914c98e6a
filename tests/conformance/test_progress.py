"""Pipeline progress (ProgressStore): fenced writes, kept across runs, purged with the task."""

from __future__ import annotations

import pytest

from conformance.factories import QUEUE, claim_one, enqueue_one, msg
from conformance.test_leases import reclaimed_after_lapse
from conveyor.brokers.progress import ProgressStore
from conveyor.brokers.protocol import Broker
from conveyor.errors import LeaseLostError
from conveyor.message import Completion, TaskState
from support import eventually

DOC = b'{"v":1,"next":1,"started":null,"data":{"a":1},"log":[]}'


def store(broker: Broker) -> ProgressStore:
    assert isinstance(broker, ProgressStore)
    return broker


async def test_every_backend_stores_progress(broker: Broker) -> None:
    assert isinstance(broker, ProgressStore)


async def test_progress_saved_under_a_lease_reads_back_as_stored(broker: Broker) -> None:
    info = await enqueue_one(broker)
    assert await store(broker).load_progress(QUEUE, info.id) is None
    lease = await claim_one(broker)
    await store(broker).save_progress(lease, DOC)
    assert await store(broker).load_progress(QUEUE, info.id) == DOC
    await store(broker).save_progress(lease, b"\x00\xffsecond")  # bytes pass untouched
    assert await store(broker).load_progress(QUEUE, info.id) == b"\x00\xffsecond"


async def test_unknown_task_has_no_progress(broker: Broker) -> None:
    assert await store(broker).load_progress(QUEUE, "no-such-task") is None
    assert await store(broker).load_progress("no-such-queue", "no-such-task") is None


async def test_a_stale_lease_cannot_write_progress(broker: Broker) -> None:
    stale, current = await reclaimed_after_lapse(broker)
    await store(broker).save_progress(current, DOC)

    with pytest.raises(LeaseLostError) as caught:
        await store(broker).save_progress(stale, b"stale")

    assert (caught.value.task_id, caught.value.queue) == (current.task.id, QUEUE)
    assert await store(broker).load_progress(QUEUE, current.task.id) == DOC


async def test_no_progress_is_written_for_a_task_that_is_not_active(broker: Broker) -> None:
    await enqueue_one(broker, retention_s=60.0)
    lease = await claim_one(broker)
    assert await broker.complete([Completion(lease=lease)]) == [True]

    with pytest.raises(LeaseLostError):
        await store(broker).save_progress(lease, DOC)
    assert await store(broker).load_progress(QUEUE, lease.task.id) is None


async def test_progress_is_kept_across_a_retry_for_the_next_run(broker: Broker) -> None:
    await enqueue_one(broker, max_retry=3)
    first = await claim_one(broker)
    await store(broker).save_progress(first, DOC)
    await broker.retry(first, error="boom", delay_s=0.0)

    second = await claim_one(broker)

    assert second.task.id == first.task.id
    assert await store(broker).load_progress(QUEUE, second.task.id) == DOC
    with pytest.raises(LeaseLostError):  # the first run's token is refused from now on
        await store(broker).save_progress(first, b"late")


async def test_progress_goes_with_a_task_completed_without_retention(broker: Broker) -> None:
    info = await enqueue_one(broker)
    lease = await claim_one(broker)
    await store(broker).save_progress(lease, DOC)
    await broker.complete([Completion(lease=lease)])

    assert await store(broker).load_progress(QUEUE, info.id) is None
    # A task enqueued again under the same id starts with none.
    await broker.enqueue([msg(id=info.id)])
    assert await store(broker).load_progress(QUEUE, info.id) is None


async def test_progress_is_kept_for_the_retention_then_purged_with_the_task(
    broker: Broker,
) -> None:
    info = await enqueue_one(broker, retention_s=0.05)
    lease = await claim_one(broker)
    await store(broker).save_progress(lease, DOC)
    await broker.complete([Completion(lease=lease)])
    assert await store(broker).load_progress(QUEUE, info.id) == DOC

    async def purged() -> bool:
        await broker.purge_expired()
        return await store(broker).load_progress(QUEUE, info.id) is None

    await eventually(purged, within=3.0)


async def archived_with_progress(broker: Broker) -> str:
    info = await enqueue_one(broker)
    lease = await claim_one(broker)
    await store(broker).save_progress(lease, DOC)
    await broker.archive(lease, error="interrupted")
    return info.id


async def test_deleting_a_task_deletes_its_progress(broker: Broker) -> None:
    one = await archived_with_progress(broker)
    await broker.delete_task(QUEUE, one)
    assert await store(broker).load_progress(QUEUE, one) is None

    many = [await archived_with_progress(broker) for _ in range(2)]
    assert await broker.delete_tasks(QUEUE, TaskState.ARCHIVED) == 2
    assert [await store(broker).load_progress(QUEUE, i) for i in many] == [None, None]


async def test_deleting_a_queue_deletes_its_progress(broker: Broker) -> None:
    task_id = await archived_with_progress(broker)
    await broker.delete_queue(QUEUE, force=True)
    assert await store(broker).load_progress(QUEUE, task_id) is None


async def test_resume_replaces_an_archived_tasks_progress_only_if_unchanged(
    broker: Broker,
) -> None:
    task_id = await archived_with_progress(broker)
    progress = store(broker)

    assert not await progress.resume_progress(QUEUE, task_id, expected=b"other", progress=b"x")
    assert await progress.load_progress(QUEUE, task_id) == DOC
    assert await progress.resume_progress(QUEUE, task_id, expected=DOC, progress=b"resumed")
    assert await progress.load_progress(QUEUE, task_id) == b"resumed"


async def test_resume_leaves_a_task_that_is_not_archived_alone(broker: Broker) -> None:
    await enqueue_one(broker, max_retry=3)
    lease = await claim_one(broker)
    await store(broker).save_progress(lease, DOC)
    progress = store(broker)

    # ACTIVE: a worker holds it.
    assert not await progress.resume_progress(QUEUE, lease.task.id, expected=DOC, progress=b"x")
    await broker.retry(lease, error="boom", delay_s=60.0)
    # RETRY: its next run decides (it archives an interrupted step first).
    assert not await progress.resume_progress(QUEUE, lease.task.id, expected=DOC, progress=b"x")
    assert not await progress.resume_progress(QUEUE, "no-such-task", expected=DOC, progress=b"x")
    assert await progress.load_progress(QUEUE, lease.task.id) == DOC
