"""Workflows on a real 3-node Redis Cluster: the outbox path, and a crash between its steps."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import App, SkipRetry, StepState, TaskFailedError, WorkflowState, chain, chord
from conveyor.brokers.redis import RedisBroker, keys
from conveyor.brokers.workflows import StepOutcome, parse_step_task_id
from conveyor.errors import TaskNotFoundError
from conveyor.message import TaskState
from conveyor.worker.context import TaskContext
from conveyor.worker.server import Server
from conveyor.worker.workflow_steps import StepRunner
from support import eventually
from worker.harness import fast, serving

pytestmark = [pytest.mark.process, pytest.mark.redis]


@pytest.fixture
def broker(cluster_broker: RedisBroker) -> RedisBroker:
    """A fresh namespace on the session's 3-node Cluster (tests/conftest.py)."""
    return cluster_broker


def make_app(broker: RedisBroker, calls: list[tuple[str, Any]]) -> App:
    app = App(broker)

    # Each task in its own queue, so a workflow's steps span several slots.
    @app.task(name="add", queue="qa", max_retry=3)
    def add(a: int, b: int) -> int:
        calls.append(("add", (a, b)))
        return a + b

    @app.task(name="total", queue="qb", max_retry=0)
    def total(values: list[int]) -> int:
        calls.append(("total", values))
        return sum(values)

    @app.task(name="boom", queue="qc", max_retry=0)
    def boom(x: int) -> int:
        calls.append(("boom", x))
        raise SkipRetry("boom failed")

    @app.task(name="on_error", queue="qd", max_retry=0)
    def on_error(error: str, tag: str) -> None:
        calls.append(("on_error", (error, tag)))

    return app


async def test_chain_chord_and_failure_with_error_callbacks(broker: RedisBroker) -> None:
    calls: list[tuple[str, Any]] = []
    app = make_app(broker, calls)
    add, total, boom, on_error = (app.tasks[n] for n in ("add", "total", "boom", "on_error"))
    server = Server(broker, queues={"qa": 1, "qb": 1, "qc": 1, "qd": 1}, **fast(concurrency=8))
    async with serving(server, app.mux):
        info = await app.aenqueue_workflow(chain(add.s(1, 2), add.s(10), add.s(100)))
        assert await app.async_client.wait(info, 20) == 113

        info = await app.aenqueue_workflow(chord([add.s(i, i) for i in range(20)], total.s()))
        assert await app.async_client.wait(info, 20) == sum(2 * i for i in range(20))
        assert sum(1 for c in calls if c[0] == "total") == 1

        canvas = chain(add.s(1, 1), boom.s().link_error(on_error.s("cb")), add.s(1000))
        info = await app.aenqueue_workflow(canvas)
        with pytest.raises(TaskFailedError) as failed:
            await app.async_client.wait(info, 20)
        assert failed.value.task_id == info.steps[1].task_id

        async def callback_ran() -> bool:
            rec = await broker.load_workflow(info.id)
            return rec.steps[2].state is StepState.SUCCEEDED

        await eventually(callback_ran, within=10)
        assert ("on_error", (failed.value.error, "cb")) in calls
        assert ("add", (2, 1000)) not in calls
        rec = await broker.load_workflow(info.id)
        assert rec.state is WorkflowState.FAILED
        assert rec.steps[3].state is StepState.WAITING
        listed = await broker.list_workflows(WorkflowState.FAILED)
        assert [r.id for r in listed] == [info.id]


async def test_crash_between_recording_a_step_and_completing_its_task(
    broker: RedisBroker,
) -> None:
    app = make_app(broker, [])
    add = app.tasks["add"]
    info = await app.aenqueue_workflow(chain(add.s(1, 2), add.s(10)))
    [lease] = await broker.claim(["qa"], limit=1, lease_s=0.2)
    assert parse_step_task_id(lease.task.id) == (info.id, 0)

    # The worker records the step (its workflow's slot) and dies before draining the outbox
    # and completing the task (the queue's slot).
    await broker._record_step(info.id, 0, StepOutcome(succeeded=True, result=b"3"))
    rec = await broker.load_workflow(info.id)
    assert rec.steps[0].state is StepState.SUCCEEDED
    assert rec.steps[1].state is StepState.ENQUEUED  # in the outbox, not yet in its queue
    outbox = keys.workflow_outbox(broker._ns, info.id)
    assert await broker._client.smembers(outbox) == {b"1"}
    assert (await broker.get_task("qa", lease.task.id)).state is TaskState.ACTIVE

    # Recovery: the sweep drains the outbox; a second drain stores nothing twice.
    await broker.purge_workflows()
    await broker._client.sadd(outbox, "1")
    await broker._drain_outbox(info.id)
    assert await broker._client.smembers(outbox) == set()
    next_id = info.steps[1].task_id
    assert (await broker.get_task("qa", next_id)).state is TaskState.PENDING

    # The lapsed lease brings step 0 back; the runner finds it recorded and settles it
    # without running the handler, and the workflow's record does not change.
    async def lapsed() -> int:
        return await broker.recover_expired(delay_s=0)

    await eventually(lapsed, within=5)
    leases = []

    async def claimed() -> bool:
        leases.extend(await broker.claim(["qa"], limit=2, lease_s=30))
        return any(x.task.id == lease.task.id for x in leases)

    await eventually(claimed, within=5)
    again = next(x for x in leases if x.task.id == lease.task.id)
    runner = StepRunner(broker)
    verdict = await runner.prepare(
        again, TaskContext(task_id=again.task.id, queue="qa", type="add")
    )
    assert verdict == StepOutcome(succeeded=True, result=b"3")
    assert isinstance(verdict, StepOutcome)
    await runner.settle(again, verdict)
    with pytest.raises(TaskNotFoundError):
        await broker.get_task("qa", lease.task.id)  # completed (no retention: deleted)
    assert (await broker.load_workflow(info.id)).version == rec.version

    # The next step runs once and finishes the workflow.
    step1 = next(x for x in leases if x.task.id == next_id) if len(leases) > 1 else None
    if step1 is None:
        [step1] = await broker.claim(["qa"], limit=1, lease_s=30)
    assert await broker.settle_step(step1, StepOutcome(succeeded=True, result=b"13"))
    assert await app.async_client.wait(info, 5) == 13


async def test_cluster_never_continues_eagerly(broker: RedisBroker) -> None:
    app = make_app(broker, [])
    add = app.tasks["add"]
    info = await app.aenqueue_workflow(chain(add.s(1, 2), add.s(10)))
    [lease] = await broker.claim(["qa"], limit=5, lease_s=30)
    asked = StepOutcome(
        succeeded=True, result=b"3", continue_on=frozenset({"qa"}), continue_lease_s=30
    )
    # Asked for, but the step's queue lives in another slot: it is enqueued, not leased.
    assert await broker.settle_step(lease, asked) is True
    [nxt] = await broker.claim(["qa"], limit=5, lease_s=30)
    assert parse_step_task_id(nxt.task.id) == (info.id, 1)
    assert await broker.settle_step(nxt, StepOutcome(succeeded=True, result=b"13")) is True
    assert await app.async_client.wait(info, 5) == 13
