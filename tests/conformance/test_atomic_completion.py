"""complete_all: several completions with their successors in one step, or none of them."""

from __future__ import annotations

import pytest

from conformance.factories import QUEUE, claim_one, msg
from conveyor.brokers.atomic import AtomicCompletion
from conveyor.brokers.limits import FlowControl
from conveyor.brokers.protocol import Broker
from conveyor.errors import DuplicateTaskError, TaskIdConflictError
from conveyor.message import Completion, Lease, TaskState, encode_json


def _atomic(broker: Broker) -> AtomicCompletion:
    assert isinstance(broker, AtomicCompletion)
    return broker


async def _claimed(broker: Broker, n: int, **overrides: object) -> list[Lease]:
    await broker.enqueue([msg(**overrides) for _ in range(n)])
    leases = await broker.claim([QUEUE], limit=n, lease_s=30)
    assert len(leases) == n
    return leases


async def _ids(broker: Broker, state: TaskState) -> set[str]:
    return {t.id for t in await broker.list_tasks(QUEUE, state)}


async def test_every_completion_and_successor_is_applied(broker: Broker) -> None:
    leases = await _claimed(broker, 3, retention_s=600)
    pushed = [msg(), msg(queue="other")]
    completions = [Completion(lease=leases[0], result=encode_json(1), successors=tuple(pushed))]
    completions += [Completion(lease=lease) for lease in leases[1:]]

    assert await _atomic(broker).complete_all(completions) is True

    assert await _ids(broker, TaskState.COMPLETED) == {le.task.id for le in leases}
    assert (await broker.get_task(QUEUE, leases[0].task.id)).result == 1
    assert await _ids(broker, TaskState.PENDING) == {pushed[0].id}
    assert (await broker.get_task("other", pushed[1].id)).state is TaskState.PENDING
    assert (await broker.queue_stats(QUEUE)).processed_today == 3


async def test_one_lost_lease_changes_nothing(broker: Broker) -> None:
    leases = await _claimed(broker, 3)
    await broker.release(leases[2])  # its lease is gone: the block must refuse as a whole
    retaken = await claim_one(broker)
    pushed = msg()
    completions = [Completion(lease=leases[0], successors=(pushed,))]
    completions += [Completion(lease=lease) for lease in leases[1:]]

    assert await _atomic(broker).complete_all(completions) is False

    assert await _ids(broker, TaskState.ACTIVE) == {le.task.id for le in leases}
    assert await _ids(broker, TaskState.PENDING) == set()
    assert (await broker.queue_stats(QUEUE)).processed_today == 0
    # The leases still held work as before.
    assert await broker.complete([Completion(lease=lease) for lease in leases[:2]]) == [True] * 2
    assert await broker.complete([Completion(lease=retaken)]) == [True]


async def test_a_refused_successor_changes_nothing(broker: Broker) -> None:
    leases = await _claimed(broker, 2)
    taken = msg()
    await broker.enqueue([taken])
    completions = [
        Completion(lease=leases[0], successors=(msg(),)),
        Completion(lease=leases[1], successors=(msg(id=taken.id),)),
    ]

    with pytest.raises(TaskIdConflictError):
        await _atomic(broker).complete_all(completions)

    assert await _ids(broker, TaskState.ACTIVE) == {le.task.id for le in leases}
    assert await _ids(broker, TaskState.PENDING) == {taken.id}


async def test_successors_of_different_completions_may_not_collide(broker: Broker) -> None:
    leases = await _claimed(broker, 2)
    twin = msg()
    completions = [
        Completion(lease=leases[0], successors=(twin,)),
        Completion(lease=leases[1], successors=(msg(id=twin.id),)),
    ]

    with pytest.raises(TaskIdConflictError):
        await _atomic(broker).complete_all(completions)
    assert await _ids(broker, TaskState.ACTIVE) == {le.task.id for le in leases}


async def test_a_held_unique_key_refuses_the_call(broker: Broker) -> None:
    leases = await _claimed(broker, 1)
    await broker.enqueue([msg(unique_key="k", unique_ttl_s=600)])  # held by another task
    completions = [Completion(lease=leases[0], successors=(msg(unique_key="k"),))]

    with pytest.raises(DuplicateTaskError):
        await _atomic(broker).complete_all(completions)
    assert (await broker.queue_stats(QUEUE)).processed_today == 0


async def test_the_same_task_twice_is_refused_up_front(broker: Broker) -> None:
    [lease] = await _claimed(broker, 1)

    with pytest.raises(ValueError, match="twice"):
        await _atomic(broker).complete_all([Completion(lease=lease), Completion(lease=lease)])
    assert await broker.complete([Completion(lease=lease)]) == [True]


async def test_an_empty_call_is_applied(broker: Broker) -> None:
    assert await _atomic(broker).complete_all([]) is True


async def test_enqueue_all_stores_everything_or_nothing(broker: Broker) -> None:
    taken = msg()
    await broker.enqueue([taken])

    with pytest.raises(TaskIdConflictError):
        await _atomic(broker).enqueue_all([msg(), msg(id=taken.id)])
    assert await _ids(broker, TaskState.PENDING) == {taken.id}

    fresh = [msg(), msg()]
    await _atomic(broker).enqueue_all(fresh)
    assert await _ids(broker, TaskState.PENDING) == {taken.id, *(m.id for m in fresh)}


async def test_complete_all_frees_concurrency_slots(broker: Broker) -> None:
    assert isinstance(broker, FlowControl)
    await broker.set_task_concurrency("api:call", 1)
    await broker.set_queue_concurrency(QUEUE, 1)
    first, second = msg(type="api:call"), msg(type="api:call")
    await broker.enqueue([first, second])
    [lease] = await broker.claim([QUEUE], limit=10, lease_s=30)
    assert await broker.claim([QUEUE], limit=10, lease_s=30) == []

    assert await _atomic(broker).complete_all([Completion(lease=lease)]) is True

    assert [le.task.id for le in await broker.claim([QUEUE], limit=10, lease_s=30)] == [second.id]
