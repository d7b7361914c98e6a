"""Unique locks: scoped per queue, held until TTL, completion or deletion; kept on failure."""

from __future__ import annotations

import pytest

from conformance.factories import QUEUE, claim_one, enqueue_one, msg
from conveyor.brokers.protocol import Broker
from conveyor.errors import DuplicateTaskError
from conveyor.message import Completion, TaskState
from support import eventually


async def test_live_unique_key_refuses_a_second_task(broker: Broker) -> None:
    first = await enqueue_one(broker, unique_key="k", unique_ttl_s=600)
    second = msg(unique_key="k", unique_ttl_s=600)

    with pytest.raises(DuplicateTaskError) as caught:
        await broker.enqueue([second])

    assert (caught.value.task_id, caught.value.queue) == (second.id, QUEUE)
    assert (await broker.queue_stats(QUEUE)).pending == 1
    assert (await broker.get_task(QUEUE, first.id)).state is TaskState.PENDING


async def test_unique_key_without_ttl_is_held_until_completion(broker: Broker) -> None:
    await enqueue_one(broker, unique_key="forever")

    with pytest.raises(DuplicateTaskError):
        await enqueue_one(broker, unique_key="forever")

    assert await broker.complete([Completion(lease=await claim_one(broker))]) == [True]
    assert (await enqueue_one(broker, unique_key="forever")).state is TaskState.PENDING


async def test_unique_keys_are_scoped_per_queue(broker: Broker) -> None:
    await enqueue_one(broker, queue="u1", unique_key="k", unique_ttl_s=600)

    info = await enqueue_one(broker, queue="u2", unique_key="k", unique_ttl_s=600)

    assert info.state is TaskState.PENDING


async def test_different_unique_keys_do_not_clash(broker: Broker) -> None:
    await enqueue_one(broker, unique_key="a", unique_ttl_s=600)

    assert (await enqueue_one(broker, unique_key="b", unique_ttl_s=600)).unique_key == "b"


async def test_unique_lock_expires_after_its_ttl(broker: Broker) -> None:
    await enqueue_one(broker, unique_key="short", unique_ttl_s=0.2)
    with pytest.raises(DuplicateTaskError):
        await enqueue_one(broker, unique_key="short", unique_ttl_s=0.2)

    async def enqueue_succeeds() -> bool:
        try:
            await enqueue_one(broker, unique_key="short", unique_ttl_s=600)
        except DuplicateTaskError:
            return False
        return True

    assert await eventually(enqueue_succeeds, within=3.0)
    assert (await broker.queue_stats(QUEUE)).pending == 2


async def test_completion_releases_the_unique_lock(broker: Broker) -> None:
    await enqueue_one(broker, unique_key="job", unique_ttl_s=600)
    lease = await claim_one(broker)

    assert await broker.complete([Completion(lease=lease)]) == [True]

    assert (
        await enqueue_one(broker, unique_key="job", unique_ttl_s=600)
    ).state is TaskState.PENDING


async def test_completion_with_retention_releases_the_unique_lock(broker: Broker) -> None:
    await enqueue_one(broker, unique_key="kept", unique_ttl_s=600, retention_s=600)

    assert await broker.complete([Completion(lease=await claim_one(broker))]) == [True]

    assert (await enqueue_one(broker, unique_key="kept", unique_ttl_s=600)).unique_key == "kept"


async def test_deleting_the_task_releases_the_unique_lock(broker: Broker) -> None:
    info = await enqueue_one(broker, unique_key="del", unique_ttl_s=600)

    await broker.delete_task(QUEUE, info.id)

    assert (await enqueue_one(broker, unique_key="del", unique_ttl_s=600)).unique_key == "del"


async def test_retry_and_archive_keep_the_unique_lock(broker: Broker) -> None:
    await enqueue_one(broker, unique_key="r", unique_ttl_s=600)
    await enqueue_one(broker, unique_key="a", unique_ttl_s=600)
    first, second = await broker.claim([QUEUE], limit=2, lease_s=30)

    await broker.retry(first, error="boom", delay_s=600)
    await broker.archive(second, error="boom")

    for key in ("r", "a"):
        with pytest.raises(DuplicateTaskError):
            await enqueue_one(broker, unique_key=key, unique_ttl_s=600)


async def test_a_stale_completion_does_not_release_a_newer_lock(broker: Broker) -> None:
    # The first task's lock is released by its completion; a new task then takes the key.
    # Completing the first task again (stale) must not free the new task's lock.
    await enqueue_one(broker, unique_key="chain", unique_ttl_s=600)
    lease = await claim_one(broker)
    assert await broker.complete([Completion(lease=lease)]) == [True]
    await enqueue_one(broker, unique_key="chain", unique_ttl_s=600)

    assert await broker.complete([Completion(lease=lease)]) == [False]

    with pytest.raises(DuplicateTaskError):
        await enqueue_one(broker, unique_key="chain", unique_ttl_s=600)


async def test_a_successor_cannot_take_a_lock_held_by_a_namesake_in_its_queue(
    broker: Broker,
) -> None:
    # A completing task passes its own lock to its successors; a task with the same id in the
    # successor's queue is another task, and its lock holds.
    await broker.enqueue([msg(id="same", queue="elsewhere", unique_key="k")])
    await enqueue_one(broker, id="same")
    lease = await claim_one(broker)
    successor = msg(id="next", queue="elsewhere", unique_key="k")

    with pytest.raises(DuplicateTaskError):
        await broker.complete([Completion(lease=lease, successors=(successor,))])

    assert [t.id for t in await broker.list_tasks("elsewhere", TaskState.PENDING)] == ["same"]
    assert (await broker.get_task(QUEUE, "same")).state is TaskState.ACTIVE
