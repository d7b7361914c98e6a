"""Claim: FIFO by ready time, limits, queue priority, pause, scheduled tasks never early."""

from __future__ import annotations

import time

from conformance.factories import QUEUE, claim_ids, claim_one, enqueue_one, is_utc, msg
from conveyor.brokers.protocol import Broker
from conveyor.message import TaskState
from support import eventually


async def test_claim_on_empty_or_unknown_queue_returns_nothing(broker: Broker) -> None:
    assert await broker.claim([QUEUE, "never-used"], limit=10, lease_s=30) == []


async def test_claim_makes_the_task_active_with_a_lease(broker: Broker) -> None:
    info = await enqueue_one(broker, payload={"a": 1})
    before = time.time()

    lease = await claim_one(broker, lease_s=30)

    assert lease.task.id == info.id
    assert lease.task.state is TaskState.ACTIVE
    assert lease.task.payload == {"a": 1}
    assert lease.task.retried == 0
    assert lease.expires_at > before + 20  # broker clock; loose bound, not a timing check
    stored = await broker.get_task(QUEUE, info.id)
    assert stored.state is TaskState.ACTIVE
    assert is_utc(stored.enqueued_at)


async def test_claim_is_fifo_within_a_queue(broker: Broker) -> None:
    ids = []
    for i in range(6):
        ids.append((await enqueue_one(broker, payload=i)).id)

    assert await claim_ids(broker, [QUEUE], limit=2) == ids[:2]
    assert await claim_ids(broker, [QUEUE], limit=10) == ids[2:]


async def test_batch_enqueue_keeps_batch_order(broker: Broker) -> None:
    messages = [msg(payload=i) for i in range(5)]
    await broker.enqueue(messages)

    assert await claim_ids(broker, [QUEUE]) == [m.id for m in messages]


async def test_claim_respects_limit(broker: Broker) -> None:
    await broker.enqueue([msg() for _ in range(5)])

    assert len(await broker.claim([QUEUE], limit=3, lease_s=30)) == 3
    assert (await broker.queue_stats(QUEUE)).pending == 2


async def test_a_task_is_claimed_only_once(broker: Broker) -> None:
    await enqueue_one(broker)
    await claim_one(broker)

    assert await broker.claim([QUEUE], limit=10, lease_s=30) == []


async def test_queues_are_tried_in_the_given_order(broker: Broker) -> None:
    low = [(await enqueue_one(broker, queue="low")).id for _ in range(2)]
    high = [(await enqueue_one(broker, queue="high")).id for _ in range(2)]

    assert await claim_ids(broker, ["high", "low"], limit=3) == [*high, low[0]]
    assert await claim_ids(broker, ["high", "low"], limit=3) == [low[1]]


async def test_lower_priority_queue_is_used_when_higher_is_empty(broker: Broker) -> None:
    info = await enqueue_one(broker, queue="low")

    assert await claim_ids(broker, ["high", "low"], limit=1) == [info.id]


async def test_paused_queue_is_skipped_until_unpaused(broker: Broker) -> None:
    paused = await enqueue_one(broker, queue="paused-q")
    other = await enqueue_one(broker, queue="open-q")
    await broker.pause_queue("paused-q")

    assert await claim_ids(broker, ["paused-q", "open-q"]) == [other.id]
    assert await claim_ids(broker, ["paused-q"]) == []

    await broker.unpause_queue("paused-q")
    assert await claim_ids(broker, ["paused-q"]) == [paused.id]


async def test_enqueue_into_a_paused_queue_still_works(broker: Broker) -> None:
    await broker.pause_queue(QUEUE)

    info = await enqueue_one(broker)

    assert info.state is TaskState.PENDING
    stats = await broker.queue_stats(QUEUE)
    assert (stats.paused, stats.pending) == (True, 1)


async def test_scheduled_task_is_not_claimed_before_it_is_due(broker: Broker) -> None:
    info = await enqueue_one(broker, process_in_s=0.4)
    assert info.state is TaskState.SCHEDULED
    assert info.next_process_at is not None
    due = info.next_process_at.timestamp()

    assert await broker.claim([QUEUE], limit=1, lease_s=30) == []

    leases = await eventually(lambda: broker.claim([QUEUE], limit=1, lease_s=30), within=3.0)
    assert [lease.task.id for lease in leases] == [info.id]
    claimed_at = leases[0].expires_at - 30  # broker time of the claim
    assert claimed_at >= due - 0.001


async def test_far_future_task_stays_scheduled(broker: Broker) -> None:
    info = await enqueue_one(broker, process_in_s=3600)

    assert await broker.claim([QUEUE], limit=10, lease_s=30) == []
    assert (await broker.get_task(QUEUE, info.id)).state is TaskState.SCHEDULED


async def test_task_due_in_the_past_is_claimable_at_once(broker: Broker) -> None:
    info = await enqueue_one(broker, process_at=time.time() - 60)

    assert info.state is TaskState.PENDING
    assert await claim_ids(broker, [QUEUE]) == [info.id]


async def test_scheduled_task_joins_fifo_when_due(broker: Broker) -> None:
    scheduled = await enqueue_one(broker, process_in_s=0.2)
    assert await broker.claim([QUEUE], limit=1, lease_s=30) == []

    async def due() -> bool:
        info = await broker.get_task(QUEUE, scheduled.id)
        return info.next_process_at is not None and info.next_process_at.timestamp() < time.time()

    await eventually(due, within=3.0)
    later = await enqueue_one(broker)

    assert await claim_ids(broker, [QUEUE]) == [scheduled.id, later.id]


async def test_released_task_goes_back_to_the_front(broker: Broker) -> None:
    first = await enqueue_one(broker)
    second = await enqueue_one(broker)
    lease = await claim_one(broker)
    assert lease.task.id == first.id

    await broker.release(lease)

    released = await broker.get_task(QUEUE, first.id)
    assert released.state is TaskState.PENDING
    assert released.retried == 0
    assert await claim_ids(broker, [QUEUE]) == [first.id, second.id]


async def test_list_queues_names_enqueued_and_paused_queues(broker: Broker) -> None:
    await enqueue_one(broker, queue="zeta")
    await enqueue_one(broker, queue="alpha")
    await broker.pause_queue("mid")

    names = await broker.list_queues()

    assert {"alpha", "mid", "zeta"} <= set(names)
    assert names == sorted(names)


async def test_queue_stays_listed_after_its_tasks_are_gone(broker: Broker) -> None:
    info = await enqueue_one(broker, queue="transient")
    await broker.delete_task("transient", info.id)

    assert "transient" in await broker.list_queues()
