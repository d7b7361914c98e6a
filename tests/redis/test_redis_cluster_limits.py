"""Task type limits on Redis Cluster: one rate bucket and one concurrency limit per type across
all its queues (each queue in a slot of its own), kept in the type's own slot.

The conformance suite's rate and concurrency tests run here again on the session's Cluster;
the tests below add what only Cluster has: queues in different slots, permits that lapse with
their leases, and held tasks woken from another queue's slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.cluster import key_slot

from conformance.factories import broker_now

# The conformance tests of type limits, run on Cluster (this module's `broker`).
from conformance.test_concurrency import (  # noqa: F401
    test_a_crashed_workers_slots_come_back_when_its_leases_are_recovered,
    test_a_limit_removed_and_set_again_counts_the_tasks_running_then,
    test_a_new_type_limit_counts_tasks_already_running,
    test_a_removed_type_limit_leaves_held_tasks_to_start_as_scheduled,
    test_a_type_at_its_limit_is_held_and_others_flow_past,
    test_a_type_limit_counts_every_queue,
    test_every_way_out_of_active_frees_the_slot,
    test_slots_stay_exact_through_many_starts_and_every_way_out,
)
from conformance.test_limits import (  # noqa: F401
    test_a_rate_limit_removed_and_set_again_starts_with_a_full_bucket,
    test_a_waiting_worker_sleeps_until_the_next_token,
    test_held_back_tasks_start_as_the_bucket_refills,
    test_held_back_tasks_wait_for_the_oldest_tokens_in_turn,
    test_one_bucket_per_type_is_shared_by_its_queues,
    test_rate_limit_starts_a_burst_then_holds_the_rest_back,
    test_removing_a_rate_limit_lets_held_tasks_start_when_due,
    test_tokens_taken_by_earlier_claims_count,
)
from conveyor import App, chord
from conveyor.brokers.limits import Rate
from conveyor.brokers.protocol import Broker
from conveyor.brokers.redis import RedisBroker, keys
from conveyor.brokers.workflows import StepOutcome
from conveyor.message import Completion, Lease, TaskMessage, TaskState
from conveyor.workflows.running import workflows_of
from support import eventually

pytestmark = [pytest.mark.process, pytest.mark.redis]

QUEUES = ("q-a", "q-b", "q-c")


@pytest.fixture
async def broker(cluster_broker: Broker) -> AsyncIterator[Broker]:
    """The conformance tests above take the session's Cluster as their broker."""
    yield cluster_broker


def _redis(broker: Broker) -> RedisBroker:
    assert isinstance(broker, RedisBroker)
    return broker


@pytest.fixture
async def second(cluster_broker: Broker) -> AsyncIterator[RedisBroker]:
    """Another worker's broker object on the same Cluster and namespace."""
    first = _redis(cluster_broker)
    other = RedisBroker(first._target)
    try:
        yield other
    finally:
        await other.close()


def _messages(task_type: str, per_queue: int, **fields: Any) -> list[TaskMessage]:
    return [
        TaskMessage(id=f"{q}-{task_type}-{i}", type=task_type, queue=q, **fields)
        for q in QUEUES
        for i in range(per_queue)
    ]


async def _claim_each(broker: RedisBroker, lease_s: float = 30) -> list[Lease]:
    """Claim from each queue on its own, as workers serving one queue each would."""
    found: list[Lease] = []
    for q in QUEUES:
        found.extend(await broker.claim([q], limit=10, lease_s=lease_s))
    return found


def test_the_queues_and_the_type_keys_are_in_different_slots() -> None:
    slots = {key_slot(keys.queue_keys("ns", q).pending.encode()) for q in QUEUES}
    type_slots = {key_slot(k.encode()) for k in keys.type_keys("ns", "api")}
    assert len(slots) == len(QUEUES)
    assert len(type_slots) == 1 and not type_slots & slots


async def test_one_concurrency_limit_across_queues_and_workers(
    cluster_broker: Broker, second: RedisBroker
) -> None:
    first = _redis(cluster_broker)
    await first.set_task_concurrency("api", 2)
    await first.enqueue(_messages("api", 2) + _messages("free", 1))

    running = await _claim_each(first) + await _claim_each(second)

    limited = [le for le in running if le.task.type == "api"]
    assert len(limited) == 2  # of six, in three queues, claimed by two workers
    assert len([le for le in running if le.task.type == "free"]) == 3  # others flow past
    held = [await first.get_task(q, f"{q}-api-{i}") for q in QUEUES for i in range(2)]
    waiting = [t for t in held if t.state is TaskState.SCHEDULED]
    assert len(waiting) == 4 and all(t.retried == 0 for t in waiting)
    assert sum(s.failed_today for s in [await first.queue_stats(q) for q in QUEUES]) == 0
    permits = keys.type_keys(first._ns, "api")[0]
    assert await first._client.zcard(permits) == 2

    # A slot freed in one queue's slot wakes a task held in another's, at once.
    await second.complete([Completion(lease=limited[0])])
    again = await eventually(lambda: _claim_each(first), within=3.0)
    assert [le.task.type for le in again] == ["api"]
    assert await first._client.zcard(permits) == 2


async def test_one_rate_bucket_across_queues_and_workers(
    cluster_broker: Broker, second: RedisBroker
) -> None:
    first = _redis(cluster_broker)
    await first.set_rate_limit("api", Rate(4, 3600.0))
    await first.enqueue(_messages("api", 3))

    started = await _claim_each(first) + await _claim_each(second)

    assert len(started) == 4
    stats = [await first.queue_stats(q) for q in QUEUES]
    assert sum(s.scheduled for s in stats) == 5
    assert sum(s.active for s in stats) == 4
    bucket, tokens = keys.type_keys(first._ns, "api")[1:3]
    assert await first._client.get(tokens) == b"4"
    assert key_slot(bucket.encode()) == key_slot(tokens.encode())


async def test_a_lapsed_permit_frees_the_slot_and_an_extended_one_keeps_it(
    cluster_broker: Broker,
) -> None:
    broker = _redis(cluster_broker)
    await broker.set_task_concurrency("api", 1)
    await broker.enqueue(_messages("api", 1, max_retry=5))
    [kept] = await broker.claim([QUEUES[0]], limit=10, lease_s=0.3)
    assert await broker.extend_leases([kept], 30) == [True]

    async def first_expiry_past() -> bool:
        return await broker_now(broker) > kept.expires_at

    await eventually(first_expiry_past, within=3.0, interval=0.05)
    assert await broker.claim([QUEUES[1]], limit=10, lease_s=30) == []  # the permit moved

    await broker.complete([Completion(lease=kept)])  # wakes the task held in QUEUES[1]
    [crashed] = await broker.claim([QUEUES[1]], limit=10, lease_s=0.3)  # its worker dies
    assert await broker.claim([QUEUES[2]], limit=10, lease_s=30) == []

    # No release, no recovery: the permit lapses with the lease, and the slot is back (the
    # held task is due when the permit may lapse).
    async def claimed() -> list[Lease]:
        return await broker.claim([QUEUES[2]], limit=10, lease_s=30)

    assert len(await eventually(claimed, within=3.0, interval=0.05)) == 1
    assert (await broker.get_task(QUEUES[1], crashed.task.id)).state is TaskState.ACTIVE


async def test_every_way_out_releases_the_permit(cluster_broker: Broker) -> None:
    broker = _redis(cluster_broker)
    await broker.set_task_concurrency("api", 10)
    await broker.enqueue(_messages("api", 2, max_retry=5))
    leases = await _claim_each(broker)
    permits = keys.type_keys(broker._ns, "api")[0]
    assert await broker._client.zcard(permits) == 6

    await broker.complete([Completion(lease=leases[0])])
    await broker.retry(leases[1], error="boom", delay_s=3600)
    await broker.archive(leases[2], error="boom")
    await broker.release(leases[3])
    assert await broker.complete_all([Completion(lease=leases[4])])
    assert await broker._client.zcard(permits) == 1
    await broker.complete([Completion(lease=leases[0])])  # refused: nothing else moves
    assert await broker._client.zcard(permits) == 1


async def test_a_new_limit_counts_running_tasks_with_permits(cluster_broker: Broker) -> None:
    broker = _redis(cluster_broker)
    await broker.enqueue(_messages("api", 1))
    running = await _claim_each(broker)

    await broker.set_task_concurrency("api", 3)
    await broker.enqueue([TaskMessage(id="late", type="api", queue=QUEUES[0])])

    assert await broker.claim([QUEUES[0]], limit=10, lease_s=30) == []
    await broker.complete([Completion(lease=running[1])])  # wakes the held task
    assert [le.task.id for le in await broker.claim([QUEUES[0]], limit=10, lease_s=30)] == ["late"]
    await broker.set_task_concurrency("api", None)
    assert await broker._client.exists(keys.type_keys(broker._ns, "api")[0]) == 0


async def test_a_permit_released_while_a_claim_holds_its_task_back_is_not_missed(
    cluster_broker: Broker, second: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _redis(cluster_broker)
    await first.set_task_concurrency("api", 1)
    await first.enqueue(_messages("api", 1))
    [running] = await first.claim([QUEUES[0]], limit=10, lease_s=30)
    hold = second._hold

    async def released_meanwhile(queue: str, refused: list[tuple[Lease, int]]) -> None:
        # The running task ends between the refusal (type slot) and the hold (queue slot).
        await first.complete([Completion(lease=running)])
        await hold(queue, refused)

    monkeypatch.setattr(second, "_hold", released_meanwhile)
    claimed = await second.claim([QUEUES[1]], limit=1, lease_s=30)

    # The claim looked for a free permit after holding: the task went back to its queue, and
    # the claim's next round took it (not held for a minute with the permit free).
    assert [le.task.id for le in claimed] == [f"{QUEUES[1]}-api-0"]
    assert await first._client.zcard(keys.type_keys(first._ns, "api")[0]) == 1


async def test_a_hold_is_fenced_by_the_claims_token(cluster_broker: Broker) -> None:
    broker = _redis(cluster_broker)
    await broker.enqueue(_messages("api", 1))
    [lease] = await broker.claim([QUEUES[0]], limit=10, lease_s=30)
    block = broker._keys(QUEUES[0]).block
    stale = ["hold", lease.task.id, lease.token - 1, "api", -1]

    assert await broker._run("permit_hold", block, stale) == 0

    assert (await broker.get_task(QUEUES[0], lease.task.id)).state is TaskState.ACTIVE
    assert await broker.complete([Completion(lease=lease)]) == [True]


async def test_a_workflow_steps_settlement_releases_its_permit(cluster_broker: Broker) -> None:
    broker = _redis(cluster_broker)
    app = App(broker)

    @app.task(name="step", queue=QUEUES[0], max_retry=0)
    def step(n: int) -> int:
        return n

    @app.task(name="body", queue=QUEUES[1], max_retry=0)
    def body(values: list[int]) -> int:
        return sum(values)

    await broker.set_task_concurrency("step", 1)
    await app.aenqueue_workflow(chord([step.s(1), step.s(2)], body.s()))
    store = workflows_of(broker)
    permits = keys.type_keys(broker._ns, "step")[0]

    [first] = await broker.claim([QUEUES[0]], limit=5, lease_s=30)  # the other is held
    assert await store.settle_step(first, StepOutcome(succeeded=True, result=b"1"))
    [second] = await broker.claim([QUEUES[0]], limit=5, lease_s=30)  # woken by the release
    assert await broker._client.zcard(permits) == 1
    assert await store.settle_step(second, StepOutcome(succeeded=False, error="boom"))

    assert await broker._client.zcard(permits) == 0


async def test_a_queue_deleted_with_tasks_held_leaves_the_types_waiting_set(
    cluster_broker: Broker,
) -> None:
    broker = _redis(cluster_broker)
    waiting = keys.type_keys(broker._ns, "api")[3]
    await broker.set_task_concurrency("api", 1)
    await broker.enqueue(_messages("api", 1))
    [running] = await broker.claim([QUEUES[0]], limit=10, lease_s=30)
    assert await broker.claim([QUEUES[1]], limit=10, lease_s=30) == []  # held for the permit
    assert await broker._client.hexists(waiting, QUEUES[1])

    await broker.delete_queue(QUEUES[1], force=True)
    await broker.complete([Completion(lease=running)])  # the release finds the queue gone

    assert not await broker._client.hexists(waiting, QUEUES[1])
    assert not await broker._client.exists(keys.held_for_slot(broker._ns, QUEUES[1], "api"))


async def test_a_queue_held_for_after_the_release_read_it_stays_waiting(
    cluster_broker: Broker,
) -> None:
    broker = _redis(cluster_broker)
    type_keys = keys.type_keys(broker._ns, "api")
    await broker.set_task_concurrency("api", 1)
    await broker.enqueue(_messages("api", 1))
    [running] = await broker.claim([QUEUES[0]], limit=10, lease_s=30)
    assert await broker.claim([QUEUES[1]], limit=10, lease_s=30) == []
    seen = await broker._client.hget(type_keys[3], QUEUES[1])
    # A claim holding another task of the queue renews its entry: a forget that read the old
    # one leaves it.
    await broker.enqueue([TaskMessage(id="late", type="api", queue=QUEUES[1])])
    assert await broker.claim([QUEUES[1]], limit=10, lease_s=30) == []
    assert await broker._run("type_permit", type_keys, ["forget", QUEUES[1], seen]) == 0
    assert await broker._client.hexists(type_keys[3], QUEUES[1])

    await broker.complete([Completion(lease=running)])
    assert len(await broker.claim([QUEUES[1]], limit=10, lease_s=30)) == 1  # woken, one permit
