"""Leases: fencing tokens, extension, stale tokens refused, recovery of lapsed leases."""

from __future__ import annotations

import pytest

from conformance.factories import QUEUE, broker_now, claim_one, enqueue_one, is_utc
from conveyor.brokers.protocol import (
    LEASE_EXPIRED_ERROR,
    MAX_CRASH_ATTEMPTS,
    Broker,
    crash_limit_error,
    recover_spread,
)
from conveyor.errors import LeaseLostError
from conveyor.message import Completion, Lease, TaskState
from support import eventually

SHORT_LEASE_S = 0.2


async def recover(
    broker: Broker, *, delay_s: float = 0.0, count: int = 1, max_crashes: int = MAX_CRASH_ATTEMPTS
) -> int:
    """Run recovery until ``count`` tasks have been recovered (leases lapse in real time)."""
    total = 0

    async def recovered_enough() -> bool:
        nonlocal total
        total += await broker.recover_expired(delay_s=delay_s, max_crashes=max_crashes)
        return total >= count

    await eventually(recovered_enough, within=3.0)
    return total


async def reclaimed_after_lapse(broker: Broker) -> tuple[Lease, Lease]:
    """Claim with a short lease, let it lapse, recover, claim again: (stale, current)."""
    await enqueue_one(broker, max_retry=5)
    stale = await claim_one(broker, lease_s=SHORT_LEASE_S)
    assert await recover(broker) == 1
    current = await claim_one(broker)
    return stale, current


async def test_tokens_strictly_increase_across_claims_of_a_task(broker: Broker) -> None:
    await enqueue_one(broker)
    tokens = []
    for _ in range(3):
        lease = await claim_one(broker)
        tokens.append(lease.token)
        await broker.release(lease)

    assert tokens == sorted(set(tokens))


async def test_extend_keeps_a_held_lease_alive(broker: Broker) -> None:
    info = await enqueue_one(broker)
    lease = await claim_one(broker, lease_s=SHORT_LEASE_S)

    assert await broker.extend_leases([lease], 30) == [True]

    async def original_expiry_passed() -> bool:
        return await broker_now(broker) > lease.expires_at

    await eventually(original_expiry_passed, within=3.0)
    assert await broker.recover_expired(delay_s=0) == 0
    assert (await broker.get_task(QUEUE, info.id)).state is TaskState.ACTIVE
    assert await broker.complete([Completion(lease=lease)]) == [True]


async def test_expired_lease_is_recovered_as_a_failed_attempt(broker: Broker) -> None:
    info = await enqueue_one(broker, max_retry=3)
    await claim_one(broker, lease_s=SHORT_LEASE_S)

    assert await recover(broker, delay_s=3600) == 1

    task = await broker.get_task(QUEUE, info.id)
    assert task.state is TaskState.RETRY
    assert task.retried == 1
    assert task.last_error == LEASE_EXPIRED_ERROR
    assert is_utc(task.last_failed_at) and is_utc(task.next_process_at)
    assert await broker.claim([QUEUE], limit=1, lease_s=30) == []  # due in an hour


async def test_tasks_recovered_together_are_due_at_spread_times(broker: Broker) -> None:
    # Every task of a dead worker lapses at once; their due times are spread by a factor of
    # their id and crash number, computed the same on every backend, so they are not all
    # claimed together again.
    infos = [await enqueue_one(broker, max_retry=3) for _ in range(8)]
    leases = await broker.claim([QUEUE], limit=8, lease_s=SHORT_LEASE_S)
    assert len(leases) == 8
    before = await broker_now(broker)
    assert await recover(broker, delay_s=1000, count=8) == 8
    after = await broker_now(broker)

    due = {}
    for info in infos:
        task = await broker.get_task(QUEUE, info.id)
        assert task.state is TaskState.RETRY and task.next_process_at is not None
        due[info.id] = task.next_process_at.timestamp()
    for task_id, at in due.items():
        spread = 1000 * recover_spread(task_id, 1)
        assert before + spread - 0.01 <= at <= after + spread + 0.01
    assert len({round(at) for at in due.values()}) > 1


def test_recover_spread_is_a_factor_between_half_and_one() -> None:
    factors = [recover_spread(f"task-{i}", crash) for i in range(200) for crash in (1, 2)]
    assert all(0.5 <= f < 1.0 for f in factors)
    assert min(factors) < 0.55 and max(factors) > 0.95  # spread over the whole range
    assert recover_spread("a", 1) == recover_spread("a", 1) != recover_spread("a", 2)


@pytest.mark.parametrize("max_crashes", [1, 3])
async def test_a_task_whose_lease_lapses_max_crashes_times_is_archived(
    broker: Broker, max_crashes: int
) -> None:
    # A task that kills its worker: every claim ends in a lapsed lease. It is archived at its
    # max_crashes-th recovery although retries are left; before that it goes to RETRY.
    info = await enqueue_one(broker, max_retry=10)
    for crash in range(1, max_crashes + 1):
        await claim_one(broker, lease_s=SHORT_LEASE_S)
        assert await recover(broker, max_crashes=max_crashes) == 1
        task = await broker.get_task(QUEUE, info.id)
        assert task.retried == crash
        if crash < max_crashes:
            assert task.state is TaskState.RETRY
            assert task.last_error == LEASE_EXPIRED_ERROR

    assert task.state is TaskState.ARCHIVED
    assert task.last_error == crash_limit_error(max_crashes)
    assert (await broker.queue_stats(QUEUE)).archived == 1


async def test_recovered_task_with_no_delay_is_claimable_again(broker: Broker) -> None:
    info = await enqueue_one(broker, max_retry=3)
    first = await claim_one(broker, lease_s=SHORT_LEASE_S)

    await recover(broker, delay_s=0)

    second = await eventually(lambda: broker.claim([QUEUE], limit=1, lease_s=30), within=3.0)
    assert second[0].task.id == info.id
    assert second[0].token > first.token
    assert second[0].task.retried == 1


async def test_recovery_archives_a_task_out_of_retries(broker: Broker) -> None:
    info = await enqueue_one(broker, max_retry=1)
    await claim_one(broker, lease_s=SHORT_LEASE_S)
    await recover(broker, delay_s=0)
    assert (await broker.get_task(QUEUE, info.id)).state is TaskState.RETRY

    await claim_one(broker, lease_s=SHORT_LEASE_S)
    await recover(broker, delay_s=0)

    task = await broker.get_task(QUEUE, info.id)
    assert task.state is TaskState.ARCHIVED
    assert task.retried == 2
    assert task.last_error == LEASE_EXPIRED_ERROR


async def test_recovery_with_max_retry_zero_archives_at_once(broker: Broker) -> None:
    info = await enqueue_one(broker, max_retry=0)
    await claim_one(broker, lease_s=SHORT_LEASE_S)

    await recover(broker, delay_s=0)

    assert (await broker.get_task(QUEUE, info.id)).state is TaskState.ARCHIVED


async def test_recovery_leaves_live_leases_alone(broker: Broker) -> None:
    info = await enqueue_one(broker)
    await claim_one(broker, lease_s=30)

    assert await broker.recover_expired(delay_s=0) == 0
    assert (await broker.get_task(QUEUE, info.id)).state is TaskState.ACTIVE


async def test_recovery_counts_a_failure(broker: Broker) -> None:
    await enqueue_one(broker)
    await claim_one(broker, lease_s=SHORT_LEASE_S)

    await recover(broker, delay_s=3600)

    stats = await broker.queue_stats(QUEUE)
    assert (stats.processed_today, stats.failed_today, stats.retry) == (1, 1, 1)


async def test_stale_token_cannot_complete(broker: Broker) -> None:
    stale, current = await reclaimed_after_lapse(broker)

    assert await broker.complete([Completion(lease=stale, result=b'"late"')]) == [False]

    task = await broker.get_task(QUEUE, current.task.id)
    assert task.state is TaskState.ACTIVE
    assert await broker.complete([Completion(lease=current)]) == [True]


async def test_stale_token_cannot_retry_archive_or_release(broker: Broker) -> None:
    stale, current = await reclaimed_after_lapse(broker)
    before = await broker.get_task(QUEUE, current.task.id)

    with pytest.raises(LeaseLostError) as caught:
        await broker.retry(stale, error="late", delay_s=0)
    assert (caught.value.task_id, caught.value.queue) == (stale.task.id, QUEUE)
    with pytest.raises(LeaseLostError):
        await broker.archive(stale, error="late")
    with pytest.raises(LeaseLostError):
        await broker.release(stale)

    assert await broker.get_task(QUEUE, current.task.id) == before
    stats = await broker.queue_stats(QUEUE)
    assert (stats.active, stats.failed_today) == (1, 1)  # only the recovery counted


async def test_stale_token_cannot_extend(broker: Broker) -> None:
    stale, current = await reclaimed_after_lapse(broker)

    assert await broker.extend_leases([stale, current], 30) == [False, True]


async def test_lease_of_a_finished_task_is_lost(broker: Broker) -> None:
    await enqueue_one(broker)
    lease = await claim_one(broker)
    assert await broker.complete([Completion(lease=lease)]) == [True]

    assert await broker.complete([Completion(lease=lease)]) == [False]
    assert await broker.extend_leases([lease], 30) == [False]
    with pytest.raises(LeaseLostError):
        await broker.retry(lease, error="x", delay_s=0)
    with pytest.raises(LeaseLostError):
        await broker.archive(lease, error="x")
    with pytest.raises(LeaseLostError):
        await broker.release(lease)


async def test_released_lease_is_lost(broker: Broker) -> None:
    await enqueue_one(broker)
    lease = await claim_one(broker)
    await broker.release(lease)

    assert await broker.complete([Completion(lease=lease)]) == [False]
    with pytest.raises(LeaseLostError):
        await broker.release(lease)


async def test_expired_but_unrecovered_lease_still_completes(broker: Broker) -> None:
    await enqueue_one(broker)
    lease = await claim_one(broker, lease_s=0)

    assert await broker.complete([Completion(lease=lease)]) == [True]


async def test_token_of_a_deleted_task_does_not_fence_its_successor(broker: Broker) -> None:
    # Recovered, deleted and enqueued again under the same id: the zombie's token must not
    # match the new task's claim, so tokens may not restart per incarnation.
    stale, current = await reclaimed_after_lapse(broker)
    task_id = stale.task.id
    await broker.release(current)
    await broker.delete_task(QUEUE, task_id)
    await enqueue_one(broker, id=task_id)

    fresh = await claim_one(broker)

    assert fresh.task.id == task_id
    assert await broker.complete([Completion(lease=stale)]) == [False]
    assert await broker.complete([Completion(lease=current)]) == [False]
    assert (await broker.get_task(QUEUE, task_id)).state is TaskState.ACTIVE
    assert await broker.complete([Completion(lease=fresh)]) == [True]
