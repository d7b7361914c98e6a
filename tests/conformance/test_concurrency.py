"""Flow control: concurrency limits per task type and per queue, counted from task states."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from conformance.factories import QUEUE, claim_ids, msg, state_of
from conformance.test_leases import recover
from conveyor.brokers.limits import FlowControl
from conveyor.brokers.protocol import Broker
from conveyor.message import Completion, Lease, TaskState

OTHER = "other"


def flow(broker: Broker) -> FlowControl:
    assert isinstance(broker, FlowControl)
    return broker


async def test_concurrency_limits_are_stored_and_removed(broker: Broker) -> None:
    await flow(broker).set_task_concurrency("api:call", 3)
    await flow(broker).set_queue_concurrency(QUEUE, 5)
    assert await flow(broker).task_concurrency() == {"api:call": 3}
    assert await flow(broker).queue_concurrency(QUEUE) == 5
    assert await flow(broker).queue_concurrency(OTHER) is None

    await flow(broker).set_task_concurrency("api:call", None)
    await flow(broker).set_queue_concurrency(QUEUE, None)
    assert await flow(broker).task_concurrency() == {}
    assert await flow(broker).queue_concurrency(QUEUE) is None


async def test_a_queue_at_its_limit_is_passed_over(broker: Broker) -> None:
    await flow(broker).set_queue_concurrency(QUEUE, 2)
    mine = [msg() for _ in range(4)]
    others = [msg(queue=OTHER) for _ in range(2)]
    await broker.enqueue([*mine, *others])

    # Strict priority: QUEUE first, passed over once at its limit, as if it were empty.
    leases = await broker.claim([QUEUE, OTHER], limit=10, lease_s=30)

    assert [le.task.id for le in leases] == [mine[0].id, mine[1].id, others[0].id, others[1].id]
    assert await claim_ids(broker, [QUEUE]) == []
    assert [await state_of(broker, m.id) for m in mine[2:]] == [TaskState.PENDING] * 2
    await broker.complete([Completion(lease=leases[0])])
    assert await claim_ids(broker, [QUEUE]) == [mine[2].id]


async def test_an_idle_wait_does_not_wake_for_a_queue_at_its_limit(broker: Broker) -> None:
    await flow(broker).set_queue_concurrency(QUEUE, 1)
    await broker.enqueue([msg(), msg()])
    assert len(await claim_ids(broker, [QUEUE])) == 1

    waiter = asyncio.create_task(broker.wait_for_tasks([QUEUE], 0.3))
    done, _ = await asyncio.wait({waiter}, timeout=0.1)
    assert not done
    await waiter


async def test_a_type_at_its_limit_is_held_and_others_flow_past(broker: Broker) -> None:
    await flow(broker).set_task_concurrency("api:call", 1)
    limited = [msg(type="api:call") for _ in range(3)]
    free = [msg(type="other:type") for _ in range(2)]
    await broker.enqueue([*limited, *free])

    leases = await broker.claim([QUEUE], limit=10, lease_s=30)

    assert [le.task.id for le in leases] == [limited[0].id, free[0].id, free[1].id]
    held = [await broker.get_task(QUEUE, m.id) for m in limited[1:]]
    assert [(t.state, t.retried) for t in held] == [(TaskState.SCHEDULED, 0)] * 2
    assert await claim_ids(broker, [QUEUE]) == []
    # The slot frees: the first held task comes back to the front, in its turn.
    await broker.complete([Completion(lease=leases[0])])
    assert await claim_ids(broker, [QUEUE]) == [limited[1].id]
    assert (await broker.queue_stats(QUEUE)).failed_today == 0


async def test_a_type_limit_counts_every_queue(broker: Broker) -> None:
    await flow(broker).set_task_concurrency("api:call", 2)
    await broker.enqueue([msg(type="api:call", queue=q) for q in (QUEUE, OTHER) for _ in range(2)])

    leases = await broker.claim([QUEUE, OTHER], limit=10, lease_s=30)

    assert [le.task.queue for le in leases] == [QUEUE, QUEUE]
    assert (await broker.queue_stats(OTHER)).scheduled == 2


async def _complete(broker: Broker, lease: Lease) -> None:
    await broker.complete([Completion(lease=lease)])


async def _retry(broker: Broker, lease: Lease) -> None:
    await broker.retry(lease, error="boom", delay_s=3600)


async def _archive(broker: Broker, lease: Lease) -> None:
    await broker.archive(lease, error="boom")


async def _release(broker: Broker, lease: Lease) -> None:
    await broker.release(lease)


@pytest.mark.parametrize("leave", [_complete, _retry, _archive, _release])
async def test_every_way_out_of_active_frees_the_slot(
    broker: Broker, leave: Callable[[Broker, Lease], Awaitable[None]]
) -> None:
    await flow(broker).set_task_concurrency("api:call", 1)
    await flow(broker).set_queue_concurrency(QUEUE, 1)
    first, second = msg(type="api:call"), msg(type="api:call")
    await broker.enqueue([first, second])
    [lease] = await broker.claim([QUEUE], limit=10, lease_s=30)
    assert await claim_ids(broker, [QUEUE]) == []

    await leave(broker, lease)

    expected = first.id if leave is _release else second.id
    assert await claim_ids(broker, [QUEUE]) == [expected]


async def test_a_crashed_workers_slots_come_back_when_its_leases_are_recovered(
    broker: Broker,
) -> None:
    await flow(broker).set_task_concurrency("api:call", 2)
    await flow(broker).set_queue_concurrency(QUEUE, 2)
    await broker.enqueue([msg(type="api:call", max_retry=5) for _ in range(4)])
    crashed = await broker.claim([QUEUE], limit=10, lease_s=0.2)  # the worker dies
    assert len(crashed) == 2
    assert await claim_ids(broker, [QUEUE]) == []

    await recover(broker, delay_s=3600, count=2)

    assert len(await claim_ids(broker, [QUEUE])) == 2  # the two never started


async def test_a_new_queue_limit_counts_tasks_already_running(broker: Broker) -> None:
    await broker.enqueue([msg() for _ in range(3)])
    assert len(await claim_ids(broker, [QUEUE], limit=2)) == 2

    await flow(broker).set_queue_concurrency(QUEUE, 2)

    assert await claim_ids(broker, [QUEUE]) == []


async def test_a_new_type_limit_counts_tasks_already_running(broker: Broker) -> None:
    await broker.enqueue([msg(type="api:call", queue=q) for q in (QUEUE, OTHER, QUEUE)])
    assert len(await broker.claim([QUEUE, OTHER], limit=2, lease_s=30)) == 2

    await flow(broker).set_task_concurrency("api:call", 2)

    assert await claim_ids(broker, [QUEUE, OTHER]) == []


async def test_a_removed_type_limit_leaves_held_tasks_to_start_as_scheduled(
    broker: Broker,
) -> None:
    await flow(broker).set_task_concurrency("api:call", 1)
    first, second = msg(type="api:call"), msg(type="api:call")
    await broker.enqueue([first, second])
    assert await claim_ids(broker, [QUEUE]) == [first.id]
    assert await state_of(broker, second.id) is TaskState.SCHEDULED

    await flow(broker).set_task_concurrency("api:call", None)
    await broker.run_task(QUEUE, second.id)

    assert await claim_ids(broker, [QUEUE]) == [second.id]


async def test_a_limit_removed_and_set_again_counts_the_tasks_running_then(
    broker: Broker,
) -> None:
    await flow(broker).set_queue_concurrency(QUEUE, 2)
    await flow(broker).set_task_concurrency("api:call", 2)
    await broker.enqueue([msg(type="api:call") for _ in range(6)])
    first = await broker.claim([QUEUE], limit=10, lease_s=30)
    assert len(first) == 2

    await flow(broker).set_queue_concurrency(QUEUE, None)
    await flow(broker).set_task_concurrency("api:call", None)
    more = await broker.claim([QUEUE], limit=2, lease_s=30)  # 4 running, none counted
    assert len(more) == 2
    await broker.complete([Completion(lease=first[0])])  # 3 running
    await flow(broker).set_queue_concurrency(QUEUE, 4)
    await flow(broker).set_task_concurrency("api:call", 5)

    assert len(await claim_ids(broker, [QUEUE])) == 1  # the queue's fourth slot only


async def test_slots_stay_exact_through_many_starts_and_every_way_out(broker: Broker) -> None:
    # Each round leaves ACTIVE one way or another; the limit never admits more or fewer.
    await flow(broker).set_task_concurrency("api:call", 2)
    await broker.enqueue([msg(type="api:call", max_retry=100) for _ in range(8)])
    ways = [_complete, _retry, _archive, _release]
    for round_ in range(12):
        leases = await broker.claim([QUEUE], limit=10, lease_s=30)
        assert len(leases) == 2
        assert await claim_ids(broker, [QUEUE]) == []
        for k, lease in enumerate(leases):
            await ways[(round_ + k) % len(ways)](broker, lease)
        await broker.run_tasks(QUEUE, TaskState.RETRY)
        await broker.run_tasks(QUEUE, TaskState.ARCHIVED)
