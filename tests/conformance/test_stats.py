"""Queue statistics: counts by state, paused flag, today's processed and failed totals."""

from __future__ import annotations

from conformance.factories import QUEUE, claim_one, enqueue_one, msg
from conveyor.brokers.protocol import Broker
from conveyor.message import Completion, QueueStats, TaskState


async def test_unknown_queue_has_empty_stats(broker: Broker) -> None:
    assert await broker.queue_stats("nobody-here") == QueueStats(queue="nobody-here")


async def test_stats_count_every_state(broker: Broker) -> None:
    await broker.enqueue([msg(retention_s=600) for _ in range(6)])
    leases = await broker.claim([QUEUE], limit=4, lease_s=30)
    await broker.retry(leases[0], error="boom", delay_s=3600)
    await broker.archive(leases[1], error="boom")
    assert await broker.complete([Completion(lease=leases[2])]) == [True]
    await enqueue_one(broker, process_in_s=3600)

    stats = await broker.queue_stats(QUEUE)

    assert stats == QueueStats(
        queue=QUEUE,
        pending=2,
        scheduled=1,
        active=1,
        retry=1,
        archived=1,
        completed=1,
        paused=False,
        processed_today=3,
        failed_today=2,
    )
    assert stats.size == 6


async def test_stats_are_per_queue(broker: Broker) -> None:
    await enqueue_one(broker, queue="s1")
    await enqueue_one(broker, queue="s2")
    await enqueue_one(broker, queue="s2")
    lease = await claim_one(broker, "s2")
    assert await broker.complete([Completion(lease=lease)]) == [True]

    one, two = await broker.queue_stats("s1"), await broker.queue_stats("s2")

    assert (one.pending, one.processed_today) == (1, 0)
    assert (two.pending, two.processed_today) == (1, 1)


async def test_paused_flag_follows_pause_and_unpause(broker: Broker) -> None:
    await broker.pause_queue(QUEUE)
    assert (await broker.queue_stats(QUEUE)).paused is True

    await broker.unpause_queue(QUEUE)
    assert (await broker.queue_stats(QUEUE)).paused is False


async def test_pause_is_per_queue(broker: Broker) -> None:
    await broker.pause_queue("p1")

    assert (await broker.queue_stats("p2")).paused is False


async def test_refused_transitions_count_nothing(broker: Broker) -> None:
    await enqueue_one(broker)
    lease = await claim_one(broker)
    await broker.release(lease)

    assert await broker.complete([Completion(lease=lease)]) == [False]

    stats = await broker.queue_stats(QUEUE)
    assert (stats.processed_today, stats.failed_today) == (0, 0)


async def test_list_tasks_and_stats_agree(broker: Broker) -> None:
    await broker.enqueue([msg() for _ in range(3)])
    await claim_one(broker)

    stats = await broker.queue_stats(QUEUE)

    assert stats.pending == len(await broker.list_tasks(QUEUE, TaskState.PENDING))
    assert stats.active == len(await broker.list_tasks(QUEUE, TaskState.ACTIVE))
