"""Workflows on every broker: chains, groups, chords, nesting, failure, callbacks, cancel, re-run.

Each test runs a real worker (``Server``) on the test's loop against a fresh broker and waits on
the workflow through the client (woken by the broker), never with fixed sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from conveyor import (
    App,
    SkipRetry,
    StepState,
    TaskContext,
    TaskFailedError,
    WorkflowInfo,
    WorkflowState,
    chain,
    chord,
    group,
    signature,
)
from conveyor.brokers.protocol import Broker
from conveyor.brokers.workflows import StepOutcome, WorkflowBroker
from conveyor.message import Task, TaskState
from conveyor.worker.server import Server
from conveyor.workflows.running import workflows_of
from support import eventually
from worker.harness import fast, serving

pytestmark = pytest.mark.parametrize(
    "broker", ["memory", "sqlite", "redis", "redis-acl"], indirect=True
)


@dataclass
class Flow:
    """An app with a few tasks, and what they saw."""

    app: App
    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail_first: set[str] = field(default_factory=set)


def make_app(broker: Broker) -> Flow:
    app = App(broker)
    flow = Flow(app)

    @app.task(name="add", max_retry=0)
    def add(a: int, b: int) -> int:
        flow.calls.append(("add", (a, b)))
        return a + b

    @app.task(name="mul", max_retry=0)
    def mul(a: int, b: int) -> int:
        flow.calls.append(("mul", (a, b)))
        return a * b

    @app.task(name="total", max_retry=0)
    def total(values: list[Any]) -> int:
        flow.calls.append(("total", values))
        return sum(v if isinstance(v, int) else sum(v) for v in values)

    @app.task(name="boom", max_retry=0)
    def boom(x: int) -> int:
        flow.calls.append(("boom", x))
        if "boom" in flow.fail_first:
            raise SkipRetry("boom failed")
        return x

    @app.task(name="on_error", max_retry=0)
    def on_error(error: str, tag: str) -> None:
        flow.calls.append(("on_error", (error, tag)))

    return flow


@pytest.fixture
async def flow(broker: Broker) -> AsyncIterator[Flow]:
    flow = make_app(broker)
    mux = flow.app.mux

    def raw(ctx: TaskContext, task: Task) -> Any:
        flow.calls.append(("raw", (ctx.parent_result, task.payload)))
        return {"seen": ctx.parent_result}

    mux.handle("raw", raw)
    server = Server(broker, **fast(concurrency=8))
    async with serving(server, mux):
        yield flow


async def run(flow: Flow, canvas: Any, timeout: float = 20.0) -> Any:
    info = await flow.app.aenqueue_workflow(canvas)
    return await flow.app.async_client.wait(info, timeout)


async def test_chain_passes_each_result_to_the_next_step(flow: Flow) -> None:
    add, mul = flow.app.tasks["add"], flow.app.tasks["mul"]
    assert await run(flow, chain(add.s(1, 2), mul.s(4), add.s(10))) == 22
    assert flow.calls == [("add", (1, 2)), ("mul", (3, 4)), ("add", (12, 10))]


async def test_every_step_carries_its_task_info_and_position(flow: Flow) -> None:
    add, boom = flow.app.tasks["add"], flow.app.tasks["boom"]
    flow.fail_first.add("boom")
    info = await flow.app.aenqueue_workflow(chain(add.s(1, 2), boom.s(), add.s(10)))
    # The worker may have claimed or even finished step 0 by the time the info is read back.
    first_state = info.steps[0].task.state if info.steps[0].task is not None else None
    assert first_state in (TaskState.PENDING, TaskState.ACTIVE, TaskState.COMPLETED)
    assert info.steps[2].task is None  # waits for its input: no task yet
    with pytest.raises(TaskFailedError):
        await flow.app.async_client.wait(info, 20)
    rec = await workflows_of(flow.app.async_client.broker).load_workflow(info.id)
    steps = WorkflowInfo.from_record(rec).steps
    first, failed, never = (s.task for s in steps)
    assert first is not None and (first.id, first.state, first.result) == (
        steps[0].task_id,
        TaskState.COMPLETED,
        3,
    )
    assert first.type == "add" and steps[0].position == "0.0"
    assert failed is not None and failed.state is TaskState.ARCHIVED
    assert failed.last_error is not None and "boom failed" in failed.last_error
    assert never is None


async def test_group_returns_results_in_member_order(flow: Flow) -> None:
    add = flow.app.tasks["add"]
    assert await run(flow, group(add.s(i, i) for i in range(5))) == [0, 2, 4, 6, 8]


async def test_chord_body_gets_the_list_and_group_then_step_is_a_chord(flow: Flow) -> None:
    add, total = flow.app.tasks["add"], flow.app.tasks["total"]
    assert await run(flow, chord([add.s(i, 1) for i in range(4)], total.s())) == 10
    assert await run(flow, chain(group(add.s(1, 1), add.s(2, 2)), total.s())) == 6


async def test_nesting_to_depth_three(flow: Flow) -> None:
    add, mul, total = (flow.app.tasks[n] for n in ("add", "mul", "total"))
    # a chain of (a group of (chains and a chord)), then a step
    inner = group(chain(add.s(1), mul.s(3)), chord([add.s(2), add.s(3)], total.s()))
    canvas = chain(add.s(0, 1), group(chain(inner, total.s()), mul.s(100)), total.s())
    # inner after 1: [(1+1)*3, (1+2)+(1+3)] = [6, 7] -> 13; mul(1, 100) = 100; 13 + 100
    assert await run(flow, canvas) == 113


async def test_every_group_member_gets_the_previous_result(flow: Flow) -> None:
    add, total = flow.app.tasks["add"], flow.app.tasks["total"]
    canvas = chain(add.s(1, 1), group(add.s(10), add.s(20)), group(total.s(), total.s()))
    assert await run(flow, canvas) == [34, 34]


async def test_raw_handler_reads_parent_result(flow: Flow) -> None:
    add = flow.app.tasks["add"]
    assert await run(flow, chain(add.s(2, 3), signature("raw", {"k": 1}))) == {"seen": 5}
    assert await run(flow, signature("raw", immutable=True)) == {"seen": None}


async def test_immutable_step_ignores_its_parent(flow: Flow) -> None:
    add = flow.app.tasks["add"]
    assert await run(flow, chain(add.s(1, 1), add.si(5, 5))) == 10


async def test_archived_middle_step_fails_the_workflow_and_runs_error_callbacks(
    flow: Flow,
) -> None:
    add, boom, on_error = (flow.app.tasks[n] for n in ("add", "boom", "on_error"))
    flow.fail_first.add("boom")
    canvas = chain(add.s(1, 1), boom.s().link_error(on_error.s("cb")), add.s(100))
    info = await flow.app.aenqueue_workflow(canvas)
    with pytest.raises(TaskFailedError) as failed:
        await flow.app.async_client.wait(info, 20)
    assert failed.value.task_id == info.steps[1].task_id
    assert "boom failed" in failed.value.error

    store = workflows_of(flow.app.async_client.broker)

    async def callback_done() -> bool:  # the callback ran and its settle was recorded
        rec = await store.load_workflow(info.id)
        return rec.steps[2].state is StepState.SUCCEEDED

    await eventually(callback_done, within=10)
    assert ("on_error", (failed.value.error, "cb")) in flow.calls
    assert not any(c == ("add", (2, 100)) for c in flow.calls)  # the step after never ran
    record = await store.load_workflow(info.id)
    assert record.state is WorkflowState.FAILED
    assert record.steps[2].state is StepState.SUCCEEDED  # the error callback
    assert record.steps[3].state is StepState.WAITING
    assert record.finished_at is not None


async def test_rerun_of_a_failed_step_resumes_the_workflow(flow: Flow, broker: Broker) -> None:
    add, boom = flow.app.tasks["add"], flow.app.tasks["boom"]
    flow.fail_first.add("boom")
    info = await flow.app.aenqueue_workflow(chain(add.s(1, 1), boom.s(), add.s(100)))
    with pytest.raises(TaskFailedError) as failed:
        await flow.app.async_client.wait(info, 20)
    flow.fail_first.clear()
    step = info.steps[1]
    await broker.run_task(step.queue, failed.value.task_id)

    async def resumed() -> bool:
        return (await _record(flow, info.id)).state is not WorkflowState.FAILED

    await eventually(resumed, within=10)  # failed until the re-run step succeeds
    assert await flow.app.async_client.wait(info, 20) == 102
    assert (await _record(flow, info.id)).error is None


async def test_sibling_results_are_kept_when_a_member_fails(flow: Flow) -> None:
    add, boom, total = (flow.app.tasks[n] for n in ("add", "boom", "total"))
    flow.fail_first.add("boom")
    info = await flow.app.aenqueue_workflow(chord([add.s(1, 1), boom.s(7)], total.s()))
    with pytest.raises(TaskFailedError):
        await flow.app.async_client.wait(info, 20)
    store = workflows_of(flow.app.async_client.broker)

    async def sibling_done() -> bool:
        rec = await store.load_workflow(info.id)
        return rec.steps[0].state is StepState.SUCCEEDED

    await eventually(sibling_done, within=10)
    rec = await store.load_workflow(info.id)
    assert rec.steps[0].decoded_result() == 2
    assert rec.steps[2].state is StepState.WAITING  # the body never ran
    assert not any(name == "total" for name, _ in flow.calls)


@pytest.mark.slow
async def test_thousand_member_chord(flow: Flow) -> None:
    add, total = flow.app.tasks["add"], flow.app.tasks["total"]
    canvas = chord([add.s(i, 0) for i in range(1000)], total.s())
    assert await run(flow, canvas, timeout=120) == sum(range(1000))
    assert sum(1 for name, _ in flow.calls if name == "total") == 1


async def test_success_callback_receives_the_result(flow: Flow) -> None:
    add, mul = flow.app.tasks["add"], flow.app.tasks["mul"]
    info = await flow.app.aenqueue_workflow(add.s(2, 2).link(mul.s(10)))
    await flow.app.async_client.wait(info, 20)
    assert ("mul", (4, 10)) in flow.calls
    assert len((await _record(flow, info.id)).steps) == 2


async def _record(flow: Flow, workflow_id: str) -> Any:
    return await workflows_of(flow.app.async_client.broker).load_workflow(workflow_id)


# -- without a worker: the broker steps themselves --------------------------------------------


async def test_cancel_starts_nothing_more(broker: Broker) -> None:
    flow = make_app(broker)
    add = flow.app.tasks["add"]
    info = await flow.app.aenqueue_workflow(chain(add.s(1, 1), add.s(2)))
    store = workflows_of(broker)
    [lease] = await broker.claim(["default"], limit=1, lease_s=30)
    inspector_cancel = await store.cancel_workflow(info.id)
    assert inspector_cancel is True
    assert await store.cancel_workflow(info.id) is False  # already finished
    # the running step finishes, but starts nothing after it
    assert await store.settle_step(lease, StepOutcome(succeeded=True, result=b"2")) is True
    rec = await store.load_workflow(info.id)
    assert rec.state is WorkflowState.CANCELLED
    assert rec.steps[0].state is StepState.SUCCEEDED
    assert rec.steps[1].state is StepState.CANCELLED
    assert await broker.claim(["default"], limit=10, lease_s=30) == []


async def test_two_members_finishing_at_once_enqueue_the_body_once(broker: Broker) -> None:
    flow = make_app(broker)
    add, total = flow.app.tasks["add"], flow.app.tasks["total"]
    for _ in range(5):
        info = await flow.app.aenqueue_workflow(chord([add.s(1, 1), add.s(2, 2)], total.s()))
        store = workflows_of(broker)
        leases = await broker.claim(["default"], limit=2, lease_s=30)
        assert len(leases) == 2
        done = await asyncio.gather(
            *(store.settle_step(le, StepOutcome(succeeded=True, result=b"1")) for le in leases)
        )
        assert done == [True, True]
        bodies = await broker.claim(["default"], limit=10, lease_s=30)
        assert [le.task.id for le in bodies] == [info.steps[2].task_id]
        assert await store.settle_step(bodies[0], StepOutcome(succeeded=True, result=b"2"))
        assert (await store.load_workflow(info.id)).state is WorkflowState.SUCCEEDED


async def test_stale_lease_changes_nothing(broker: Broker) -> None:
    flow = make_app(broker)
    add = flow.app.tasks["add"]
    info = await flow.app.aenqueue_workflow(chain(add.s(1, 1).options(max_retry=3), add.s(2)))
    store = workflows_of(broker)
    [lease] = await broker.claim(["default"], limit=1, lease_s=0)
    assert await broker.recover_expired(delay_s=0) == 1
    assert await store.settle_step(lease, StepOutcome(succeeded=True, result=b"2")) is False
    rec = await store.load_workflow(info.id)
    assert rec.steps[0].state is StepState.ENQUEUED
    [again] = await broker.claim(["default"], limit=1, lease_s=30)
    assert again.task.id == info.steps[0].task_id
    assert await store.settle_step(again, StepOutcome(succeeded=True, result=b"2"))
    [second] = await broker.claim(["default"], limit=1, lease_s=30)
    assert second.task.id == info.steps[1].task_id


async def test_recovery_archiving_a_step_fails_the_workflow(broker: Broker) -> None:
    flow = make_app(broker)
    add, on_error = flow.app.tasks["add"], flow.app.tasks["on_error"]
    canvas = chain(add.s(1, 1).link_error(on_error.s("x")), add.s(2))
    info = await flow.app.aenqueue_workflow(canvas)
    [lease] = await broker.claim(["default"], limit=1, lease_s=0)
    assert await broker.recover_expired(delay_s=0) == 1  # max_retry 0: archived
    assert (await broker.get_task("default", lease.task.id)).state is TaskState.ARCHIVED
    store: WorkflowBroker = workflows_of(broker)

    async def failed() -> bool:
        return (await store.load_workflow(info.id)).state is WorkflowState.FAILED

    await eventually(failed, within=5)
    [callback] = await broker.claim(["default"], limit=5, lease_s=30)
    assert callback.task.id == info.steps[1].task_id  # the error callback, compiled second


async def test_workflows_are_listed_and_purged_after_retention(broker: Broker) -> None:
    flow = make_app(broker)
    add = flow.app.tasks["add"]
    info = await flow.app.async_client.enqueue_workflow(add.s(1, 1), retention=0)
    store = workflows_of(broker)
    listed = await store.list_workflows(WorkflowState.PENDING)
    assert [r.id for r in listed] == [info.id]
    [lease] = await broker.claim(["default"], limit=1, lease_s=30)
    assert await store.settle_step(lease, StepOutcome(succeeded=True, result=b"2"))
    assert (await store.list_workflows(WorkflowState.PENDING)) == []
    assert await store.purge_workflows() == 1
    assert await store.list_workflows(None) == []
