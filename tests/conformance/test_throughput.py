"""Per-minute processed/failed totals (the dashboard's chart), on every backend."""

from __future__ import annotations

import pytest

from conformance.factories import QUEUE, broker_now, claim_one, enqueue_one
from conformance.test_leases import SHORT_LEASE_S, recover
from conveyor.brokers.protocol import Broker
from conveyor.brokers.throughput import MINUTE_TOTALS_KEPT, MinuteTotals, Throughput
from conveyor.message import Completion


def _sums(series: list[MinuteTotals]) -> tuple[int, int]:
    return sum(m.processed for m in series), sum(m.failed for m in series)


def _minutes(broker: Broker) -> Throughput:
    assert isinstance(broker, Throughput)
    return broker


async def test_an_unknown_queue_has_zero_minutes_ending_now(broker: Broker) -> None:
    now = await broker_now(broker)

    series = await _minutes(broker).throughput("nobody-here", minutes=60)

    assert len(series) == 60
    assert _sums(series) == (0, 0)
    starts = [m.minute.timestamp() for m in series]
    assert starts == [starts[0] + 60 * i for i in range(60)]
    # The last entry is the current minute of the broker's clock (it may have turned since).
    assert starts[-1] <= now + 60 and now - 120 < starts[-1]
    assert all(m.minute.utcoffset() is not None and m.minute.tzinfo for m in series)


async def test_every_finished_attempt_is_counted_once_and_failures_twice(broker: Broker) -> None:
    for _ in range(4):
        await enqueue_one(broker, max_retry=5)
    leases = await broker.claim([QUEUE], limit=3, lease_s=30)
    assert await broker.complete([Completion(lease=leases[0])]) == [True]
    await broker.retry(leases[1], error="boom", delay_s=3600)
    await broker.archive(leases[2], error="boom")
    await claim_one(broker, lease_s=SHORT_LEASE_S)
    await recover(broker, delay_s=3600)

    series = await _minutes(broker).throughput(QUEUE, minutes=5)

    assert len(series) == 5
    assert _sums(series) == (4, 3)


async def test_inspector_operations_and_refused_acks_count_nothing(broker: Broker) -> None:
    info = await enqueue_one(broker)
    lease = await claim_one(broker)
    await broker.release(lease)
    assert await broker.complete([Completion(lease=lease)]) == [False]
    await broker.archive_task(QUEUE, info.id)
    await broker.run_task(QUEUE, info.id)
    await broker.delete_task(QUEUE, info.id)

    assert _sums(await _minutes(broker).throughput(QUEUE, minutes=5)) == (0, 0)


async def test_minutes_are_per_queue_and_go_with_the_queue(broker: Broker) -> None:
    await enqueue_one(broker, queue="m1")
    await enqueue_one(broker, queue="m2")
    for queue in ("m1", "m2"):
        lease = await claim_one(broker, queue)
        assert await broker.complete([Completion(lease=lease)]) == [True]

    await broker.delete_queue("m1", force=True)

    assert _sums(await _minutes(broker).throughput("m1", minutes=5)) == (0, 0)
    assert _sums(await _minutes(broker).throughput("m2", minutes=5)) == (1, 0)


@pytest.mark.parametrize("minutes", [1, MINUTE_TOTALS_KEPT])
async def test_the_series_has_the_length_asked(broker: Broker, minutes: int) -> None:
    await enqueue_one(broker)
    lease = await claim_one(broker)
    assert await broker.complete([Completion(lease=lease)]) == [True]

    series = await _minutes(broker).throughput(QUEUE, minutes=minutes)

    assert len(series) == minutes
    # Counted in the current minute, or the one before when the minute turned meanwhile.
    assert sum(m.processed for m in series[-2:]) == 1


async def test_the_inspector_checks_the_minutes_asked(broker: Broker) -> None:
    from conveyor.errors import ConfigError
    from conveyor.inspector import AsyncInspector

    inspector = AsyncInspector(broker)
    assert len(await inspector.throughput(QUEUE)) == 60
    for bad in (0, MINUTE_TOTALS_KEPT + 1):
        with pytest.raises(ConfigError):
            await inspector.throughput(QUEUE, minutes=bad)
    with pytest.raises(ConfigError):
        await inspector.throughput("bad name", minutes=5)
