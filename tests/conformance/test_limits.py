"""Flow control: queue length limits (reject, drop_oldest) and rate limits (token buckets)."""

from __future__ import annotations

import asyncio

import pytest

from conformance.factories import QUEUE, claim_ids, enqueue_one, msg, state_of
from conveyor.brokers.limits import DROPPED_ERROR, FlowControl, QueueLimit, Rate
from conveyor.brokers.protocol import Broker
from conveyor.errors import QueueFullError
from conveyor.message import TaskState
from support import eventually

OTHER = "other"


def flow(broker: Broker) -> FlowControl:
    assert isinstance(broker, FlowControl)
    return broker


# -- queue length --------------------------------------------------------------------------------


async def test_queue_limit_is_stored_and_removed(broker: Broker) -> None:
    assert await flow(broker).queue_limit(QUEUE) is None

    await flow(broker).set_queue_limit(QUEUE, QueueLimit(max_length=5, overflow="drop_oldest"))
    assert await flow(broker).queue_limit(QUEUE) == QueueLimit(max_length=5, overflow="drop_oldest")
    assert await flow(broker).queue_limit(OTHER) is None

    await flow(broker).set_queue_limit(QUEUE, None)
    assert await flow(broker).queue_limit(QUEUE) is None


async def test_reject_refuses_the_enqueue_past_the_limit(broker: Broker) -> None:
    await flow(broker).set_queue_limit(QUEUE, QueueLimit(max_length=3))
    await enqueue_one(broker)
    await enqueue_one(broker, process_in_s=3600.0)  # scheduled tasks count too
    await enqueue_one(broker)

    refused = msg()
    with pytest.raises(QueueFullError) as caught:
        await broker.enqueue([refused])

    assert caught.value.queue == QUEUE
    stats = await broker.queue_stats(QUEUE)
    assert (stats.pending, stats.scheduled) == (2, 1)
    await enqueue_one(broker, queue=OTHER)  # other queues are not limited


async def test_reject_stores_none_of_a_batch_that_does_not_fit(broker: Broker) -> None:
    await flow(broker).set_queue_limit(QUEUE, QueueLimit(max_length=4))
    await enqueue_one(broker)
    batch = [msg(queue=OTHER), msg(), msg(), msg(), msg()]

    with pytest.raises(QueueFullError):
        await broker.enqueue(batch)

    assert (await broker.queue_stats(QUEUE)).pending == 1
    assert (await broker.queue_stats(OTHER)).pending == 0
    await broker.enqueue(batch[:4])  # exactly up to the limit fits
    assert (await broker.queue_stats(QUEUE)).pending == 4


async def test_active_archived_and_completed_tasks_do_not_count(broker: Broker) -> None:
    await flow(broker).set_queue_limit(QUEUE, QueueLimit(max_length=1))
    await enqueue_one(broker)
    [lease_id] = await claim_ids(broker, [QUEUE], limit=1)

    await enqueue_one(broker)  # the active one does not count

    assert await state_of(broker, lease_id) is TaskState.ACTIVE
    with pytest.raises(QueueFullError):
        await enqueue_one(broker)


async def test_drop_oldest_archives_the_oldest_pending_tasks(broker: Broker) -> None:
    await flow(broker).set_queue_limit(QUEUE, QueueLimit(max_length=3, overflow="drop_oldest"))
    old = [(await enqueue_one(broker)).id for _ in range(3)]

    new = [msg(), msg()]
    await broker.enqueue(new)

    assert [await state_of(broker, i) for i in old] == [
        TaskState.ARCHIVED,
        TaskState.ARCHIVED,
        TaskState.PENDING,
    ]
    dropped = await broker.get_task(QUEUE, old[0])
    assert dropped.last_error == DROPPED_ERROR
    assert dropped.retried == 0
    assert await claim_ids(broker, [QUEUE]) == [old[2], new[0].id, new[1].id]
    assert (await broker.queue_stats(QUEUE)).failed_today == 0


async def test_drop_oldest_without_enough_pending_tasks_rejects(broker: Broker) -> None:
    await flow(broker).set_queue_limit(QUEUE, QueueLimit(max_length=2, overflow="drop_oldest"))
    kept = [
        await enqueue_one(broker, process_in_s=3600.0),
        await enqueue_one(broker),
    ]

    with pytest.raises(QueueFullError):
        await broker.enqueue([msg(), msg()])  # room for one only, by dropping the pending one

    assert [await state_of(broker, i.id) for i in kept] == [TaskState.SCHEDULED, TaskState.PENDING]
    stats = await broker.queue_stats(QUEUE)
    assert (stats.pending, stats.scheduled, stats.archived) == (1, 1, 0)


# -- rate limits ---------------------------------------------------------------------------------


async def test_rate_limits_are_stored_and_removed(broker: Broker) -> None:
    await flow(broker).set_rate_limit("api:call", Rate.parse("10/s"))
    await flow(broker).set_rate_limit("api:slow", Rate.parse("100/10s"))
    assert await flow(broker).rate_limits() == {
        "api:call": Rate(10, 1.0),
        "api:slow": Rate(100, 10.0),
    }

    await flow(broker).set_rate_limit("api:call", None)
    assert await flow(broker).rate_limits() == {"api:slow": Rate(100, 10.0)}


async def test_rate_limit_starts_a_burst_then_holds_the_rest_back(broker: Broker) -> None:
    await flow(broker).set_rate_limit("api:call", Rate(2, 3600.0))
    limited = [msg(type="api:call") for _ in range(4)]
    free = [msg(type="other:type") for _ in range(2)]
    await broker.enqueue([*limited, *free])

    claimed = await claim_ids(broker, [QUEUE], limit=10)

    # The bucket holds two tokens: two limited tasks start; other types flow past the rest.
    assert claimed == [limited[0].id, limited[1].id, free[0].id, free[1].id]
    held = [await broker.get_task(QUEUE, m.id) for m in limited[2:]]
    assert [t.state for t in held] == [TaskState.SCHEDULED, TaskState.SCHEDULED]
    assert [t.retried for t in held] == [0, 0]
    # Held back until the tokens taken now come back, an hour from now.
    due = [t.next_process_at for t in held]
    assert due[0] is not None and due[0] == due[1]
    assert 3500 < (due[0] - (held[0].enqueued_at or due[0])).total_seconds() < 3700
    assert await claim_ids(broker, [QUEUE], limit=10) == []
    assert (await broker.queue_stats(QUEUE)).failed_today == 0


async def test_held_back_tasks_start_as_the_bucket_refills(broker: Broker) -> None:
    await flow(broker).set_rate_limit("api:call", Rate(1, 0.2))
    limited = [msg(type="api:call") for _ in range(3)]
    await broker.enqueue(limited)

    started = await claim_ids(broker, [QUEUE], limit=10)
    assert started == [limited[0].id]

    async def claimed_more() -> list[str]:
        started.extend(await claim_ids(broker, [QUEUE], limit=10))
        return started if len(started) == 3 else []

    await eventually(claimed_more, within=10.0, interval=0.05)
    assert sorted(started) == sorted(m.id for m in limited)


async def test_tokens_taken_by_earlier_claims_count(broker: Broker) -> None:
    await flow(broker).set_rate_limit("api:call", Rate(3, 3600.0))
    await broker.enqueue([msg(type="api:call") for _ in range(5)])

    started = [await claim_ids(broker, [QUEUE], limit=1) for _ in range(4)]

    assert [len(ids) for ids in started] == [1, 1, 1, 0]
    assert (await broker.queue_stats(QUEUE)).scheduled == 2


async def test_held_back_tasks_wait_for_the_oldest_tokens_in_turn(broker: Broker) -> None:
    await flow(broker).set_rate_limit("api:call", Rate(3, 3600.0))
    await broker.enqueue([msg(type="api:call") for _ in range(2)])
    assert len(await claim_ids(broker, [QUEUE], limit=10)) == 2  # two tokens taken together
    await broker.enqueue([msg(type="api:call")])
    assert len(await claim_ids(broker, [QUEUE], limit=10)) == 1  # the third, later
    waiting = [msg(type="api:call") for _ in range(3)]
    await broker.enqueue(waiting)

    assert await claim_ids(broker, [QUEUE], limit=10) == []

    due = [(await broker.get_task(QUEUE, m.id)).next_process_at for m in waiting]
    assert all(d is not None for d in due)
    # The first two wait for the two tokens taken first, the third for the one taken after.
    assert due[0] == due[1]
    assert due[2] is not None and due[0] is not None and due[2] >= due[0]


async def test_a_rate_limit_removed_and_set_again_starts_with_a_full_bucket(
    broker: Broker,
) -> None:
    await flow(broker).set_rate_limit("api:call", Rate(2, 3600.0))
    await broker.enqueue([msg(type="api:call") for _ in range(2)])
    assert len(await claim_ids(broker, [QUEUE], limit=10)) == 2

    await flow(broker).set_rate_limit("api:call", None)
    await flow(broker).set_rate_limit("api:call", Rate(2, 3600.0))
    await broker.enqueue([msg(type="api:call") for _ in range(3)])

    assert len(await claim_ids(broker, [QUEUE], limit=10)) == 2


async def test_a_waiting_worker_sleeps_until_the_next_token(broker: Broker) -> None:
    await flow(broker).set_rate_limit("api:call", Rate(1, 3600.0))
    await broker.enqueue([msg(type="api:call"), msg(type="api:call")])
    assert len(await claim_ids(broker, [QUEUE], limit=10)) == 1

    # The held-back task is not ready: an idle wait runs to its timeout, not at once.
    waiter = asyncio.create_task(broker.wait_for_tasks([QUEUE], 0.3))
    done, _ = await asyncio.wait({waiter}, timeout=0.1)
    assert not done
    await waiter


async def test_removing_a_rate_limit_lets_held_tasks_start_when_due(broker: Broker) -> None:
    await flow(broker).set_rate_limit("api:call", Rate(1, 3600.0))
    [first, second] = [msg(type="api:call"), msg(type="api:call")]
    await broker.enqueue([first, second])
    assert await claim_ids(broker, [QUEUE], limit=10) == [first.id]

    await flow(broker).set_rate_limit("api:call", None)
    await broker.run_task(QUEUE, second.id)

    assert await claim_ids(broker, [QUEUE], limit=10) == [second.id]


async def test_one_bucket_per_type_is_shared_by_its_queues(broker: Broker) -> None:
    await flow(broker).set_rate_limit("api:call", Rate(2, 3600.0))
    await broker.enqueue([msg(type="api:call", queue=q) for q in (QUEUE, OTHER) for _ in range(2)])

    claimed = await broker.claim([QUEUE, OTHER], limit=10, lease_s=30)

    assert len(claimed) == 2
    stats = [await broker.queue_stats(q) for q in (QUEUE, OTHER)]
    assert sum(s.scheduled for s in stats) == 2
