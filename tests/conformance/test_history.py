"""Attempt history (AttemptHistory): one record per failed attempt, capped, gone with the task."""

from __future__ import annotations

from conformance.factories import QUEUE, claim_one, enqueue_one, is_utc, msg
from conformance.test_leases import SHORT_LEASE_S, recover
from conformance.test_workflows import make_app
from conveyor import chain
from conveyor.brokers.history import HISTORY_ERROR_CHARS, HISTORY_KEPT, AttemptHistory
from conveyor.brokers.protocol import LEASE_EXPIRED_ERROR, Broker
from conveyor.brokers.workflows import StepOutcome
from conveyor.message import AttemptRecord, Completion, TaskState
from conveyor.workflows.running import workflows_of
from support import eventually


def history(broker: Broker) -> AttemptHistory:
    assert isinstance(broker, AttemptHistory)
    return broker


async def test_every_backend_keeps_attempt_history(broker: Broker) -> None:
    assert isinstance(broker, AttemptHistory)


async def failed_twice_then_archived(broker: Broker, **overrides: object) -> str:
    info = await enqueue_one(broker, max_retry=2, **overrides)
    for n in (1, 2):
        lease = await claim_one(broker)
        await broker.retry(lease, error=f"ValueError: attempt {n}", delay_s=0.0)
    lease = await claim_one(broker)
    await broker.archive(lease, error="RuntimeError: attempt 3")
    return info.id


async def test_each_failed_attempt_is_recorded_in_order(broker: Broker) -> None:
    task_id = await failed_twice_then_archived(broker)

    records = await history(broker).load_history(QUEUE, task_id)

    assert [(r.attempt, r.error) for r in records] == [
        (1, "ValueError: attempt 1"),
        (2, "ValueError: attempt 2"),
        (3, "RuntimeError: attempt 3"),
    ]
    assert all(isinstance(r, AttemptRecord) and is_utc(r.failed_at) for r in records)
    assert records[0].failed_at <= records[1].failed_at <= records[2].failed_at
    info = await broker.get_task(QUEUE, task_id)
    assert info.state is TaskState.ARCHIVED and info.last_failed_at == records[-1].failed_at


async def test_a_task_that_succeeds_first_time_has_no_history(broker: Broker) -> None:
    info = await enqueue_one(broker, retention_s=60.0)
    lease = await claim_one(broker)
    assert await broker.complete([Completion(lease=lease)]) == [True]

    assert (await broker.get_task(QUEUE, info.id)).state is TaskState.COMPLETED
    assert await history(broker).load_history(QUEUE, info.id) == ()
    assert await history(broker).load_history(QUEUE, "no-such-task") == ()
    assert await history(broker).load_history("no-such-queue", "no-such-task") == ()


async def test_a_released_attempt_is_not_a_failure(broker: Broker) -> None:
    info = await enqueue_one(broker)
    await broker.release(await claim_one(broker))
    assert await history(broker).load_history(QUEUE, info.id) == ()


async def test_history_keeps_the_last_attempts_only(broker: Broker) -> None:
    info = await enqueue_one(broker, max_retry=HISTORY_KEPT + 5)
    for n in range(1, HISTORY_KEPT + 4):
        lease = await claim_one(broker)
        await broker.retry(lease, error=f"boom {n}", delay_s=0.0)

    records = await history(broker).load_history(QUEUE, info.id)

    assert [r.attempt for r in records] == list(range(4, HISTORY_KEPT + 4))
    assert [r.error for r in records] == [f"boom {n}" for n in range(4, HISTORY_KEPT + 4)]


async def test_a_long_error_is_cut_in_the_history_only(broker: Broker) -> None:
    error = "é" * (HISTORY_ERROR_CHARS + 100)
    await enqueue_one(broker, max_retry=0)
    lease = await claim_one(broker)
    await broker.archive(lease, error=error)

    [record] = await history(broker).load_history(QUEUE, lease.task.id)

    assert record.error == "é" * HISTORY_ERROR_CHARS
    assert (await broker.get_task(QUEUE, lease.task.id)).last_error == error


async def test_a_lapsed_lease_is_recorded_as_a_failed_attempt(broker: Broker) -> None:
    info = await enqueue_one(broker, max_retry=5)
    await claim_one(broker, lease_s=SHORT_LEASE_S)
    assert await recover(broker) == 1

    [record] = await history(broker).load_history(QUEUE, info.id)

    assert (record.attempt, record.error) == (1, LEASE_EXPIRED_ERROR)


async def test_run_task_keeps_the_history_and_counts_on(broker: Broker) -> None:
    task_id = await failed_twice_then_archived(broker)
    await broker.run_task(QUEUE, task_id)
    lease = await claim_one(broker)
    await broker.archive(lease, error="again")

    records = await history(broker).load_history(QUEUE, task_id)

    assert [r.attempt for r in records] == [1, 2, 3, 4]
    assert records[-1].error == "again"


async def test_deleting_a_task_deletes_its_history(broker: Broker) -> None:
    one = await failed_twice_then_archived(broker)
    await broker.delete_task(QUEUE, one)
    assert await history(broker).load_history(QUEUE, one) == ()
    # A task enqueued again under the same id starts with none.
    await broker.enqueue([msg(id=one)])
    assert await history(broker).load_history(QUEUE, one) == ()
    await broker.delete_task(QUEUE, one)  # out of the way of the claims below

    many = [await failed_twice_then_archived(broker) for _ in range(2)]
    assert await broker.delete_tasks(QUEUE, TaskState.ARCHIVED) == 2
    assert [await history(broker).load_history(QUEUE, i) for i in many] == [(), ()]


async def test_deleting_a_queue_deletes_its_history(broker: Broker) -> None:
    task_id = await failed_twice_then_archived(broker)
    await broker.delete_queue(QUEUE, force=True)
    assert await history(broker).load_history(QUEUE, task_id) == ()


async def test_history_goes_with_a_task_that_completes_after_failing(broker: Broker) -> None:
    info = await enqueue_one(broker, max_retry=3, retention_s=0.05)
    await broker.retry(await claim_one(broker), error="boom", delay_s=0.0)
    lease = await claim_one(broker)
    assert await broker.complete([Completion(lease=lease)]) == [True]
    assert len(await history(broker).load_history(QUEUE, info.id)) == 1

    async def purged() -> bool:
        await broker.purge_expired()
        return await history(broker).load_history(QUEUE, info.id) == ()

    await eventually(purged, within=3.0)


async def test_a_failed_workflow_step_is_recorded(broker: Broker) -> None:
    app = make_app(broker).app
    add = app.tasks["add"]
    await app.aenqueue_workflow(chain(add.s(1, 1), add.s(2)))
    [lease] = await broker.claim([QUEUE], limit=1, lease_s=30)
    failure = StepOutcome(succeeded=False, error="ValueError: step failed")
    assert await workflows_of(broker).settle_step(lease, failure)

    [record] = await history(broker).load_history(QUEUE, lease.task.id)

    assert (record.attempt, record.error) == (1, "ValueError: step failed")


async def test_a_workflow_step_archived_by_recovery_is_recorded(broker: Broker) -> None:
    app = make_app(broker).app
    add = app.tasks["add"]
    await app.aenqueue_workflow(chain(add.s(1, 1), add.s(2)))
    [lease] = await broker.claim([QUEUE], limit=1, lease_s=0)
    assert await broker.recover_expired(delay_s=0) == 1  # max_retry 0: archived

    async def recorded() -> bool:
        records = await history(broker).load_history(QUEUE, lease.task.id)
        return [(r.attempt, r.error) for r in records] == [(1, LEASE_EXPIRED_ERROR)]

    await eventually(recorded, within=5)
