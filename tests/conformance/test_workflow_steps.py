"""A workflow's steps seen and changed from outside, on every broker.

``Inspector.get_workflow`` shows each step's task as stored (active, retry... not only what the
workflow's record knows), read in one broker call (``get_tasks``). The inspector's archive and
delete of a step's task (one task, a state's tasks, a whole queue) fail its workflow in the
same atomic step: nothing after the step runs, a chord's body never does, its error callbacks
do; ``run_task`` on an archived step still resumes the workflow.
"""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import (
    App,
    AsyncInspector,
    StepState,
    WorkflowState,
    chain,
    chord,
    group,
    signature,
)
from conveyor.brokers.protocol import Broker
from conveyor.brokers.workflows import StepOutcome, WorkflowBroker
from conveyor.errors import TaskNotFoundError
from conveyor.message import Task, TaskState
from conveyor.workflows.running import workflows_of

pytestmark = pytest.mark.parametrize(
    "broker", ["memory", "sqlite", "redis", "redis-acl"], indirect=True
)


def make_app(broker: Broker) -> App:
    app = App(broker)

    @app.task(name="add", max_retry=3)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="total", max_retry=0)
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="on_error", max_retry=0)
    def on_error(error: str, tag: str) -> None:
        return None

    return app


async def claim_all(broker: Broker, queue: str = "default") -> list[Any]:
    return await broker.claim([queue], limit=50, lease_s=30)


async def test_get_tasks_reads_several_tasks_in_order(broker: Broker) -> None:
    app = make_app(broker)
    one = await app.async_client.enqueue(Task("add", [1, 2]))
    two = await app.async_client.enqueue(Task("add", [3, 4]))
    store: WorkflowBroker = workflows_of(broker)
    found = await store.get_tasks(
        [("default", two.id), ("default", "missing"), ("elsewhere", one.id), ("default", one.id)]
    )
    assert [None if f is None else f.id for f in found] == [two.id, None, None, one.id]
    assert await store.get_tasks([]) == []


async def test_steps_show_their_tasks_real_state(broker: Broker) -> None:
    app = make_app(broker)
    add = app.tasks["add"]
    inspector = AsyncInspector(broker)
    first = await app.aenqueue_workflow(chain(add.s(1, 1), add.s(2)))
    [lease] = await claim_all(broker)  # leased, not completed: ACTIVE
    info = await inspector.get_workflow(first.id)
    running, waiting = info.steps
    assert running.task is not None and running.task.state is TaskState.ACTIVE
    assert running.state is StepState.ENQUEUED and running.task_state is TaskState.ACTIVE
    assert waiting.state is StepState.WAITING and waiting.task is None
    assert (waiting.position, waiting.task_state) == ("0.1", None)
    assert await workflows_of(broker).settle_step(lease, StepOutcome(succeeded=True, result=b"2"))
    [second_step] = await claim_all(broker)
    assert await workflows_of(broker).settle_step(
        second_step, StepOutcome(succeeded=True, result=b"4")
    )

    fan = await app.aenqueue_workflow(group(add.s(1, 1), add.s(2, 2)))
    leases = await claim_all(broker)
    retried = next(le for le in leases if le.task.id == fan.steps[0].task_id)
    await broker.retry(retried, error="flaky", delay_s=3600)
    info = await inspector.get_workflow(fan.id)
    member = info.steps[0]
    assert member.task is not None and member.task.state is TaskState.RETRY
    assert (member.task.retried, member.task.last_error) == (1, "flaky")
    assert member.task.next_process_at is not None
    assert info.steps[1].task_state is TaskState.ACTIVE
    listed = await inspector.list_workflows()
    assert {w.id: w.steps[0].task_state for w in listed} == {
        fan.id: TaskState.RETRY,
        first.id: TaskState.COMPLETED,  # completed, gone: shown from the workflow's record
    }


async def test_archiving_a_middle_chain_step_fails_the_workflow(broker: Broker) -> None:
    app = make_app(broker)
    add, on_error = app.tasks["add"], app.tasks["on_error"]
    inspector = AsyncInspector(broker)
    store = workflows_of(broker)
    canvas = chain(add.s(1, 1), add.s(2).link_error(on_error.s("x")), add.s(3))
    info = await app.aenqueue_workflow(canvas)
    middle, errback, last = info.steps[1], info.steps[2], info.steps[3]
    assert errback.error_callback and not last.error_callback
    [lease] = await claim_all(broker)
    assert await store.settle_step(lease, StepOutcome(succeeded=True, result=b"2"))

    await inspector.archive_task("default", middle.task_id)
    failed = await inspector.get_workflow(info.id)
    assert failed.state is WorkflowState.FAILED
    assert (failed.failed_task, failed.error) == (middle.task_id, "archived by the inspector")
    assert failed.steps[1].state is StepState.FAILED
    assert failed.steps[1].task_state is TaskState.ARCHIVED
    [callback] = await claim_all(broker)  # the error callback runs; the last step never does
    assert callback.task.id == errback.task_id
    with pytest.raises(TaskNotFoundError):
        await broker.get_task("default", last.task_id)

    # Running the archived step again resumes the workflow, as a re-run does.
    await inspector.run_task("default", middle.task_id)
    [again] = await claim_all(broker)
    assert again.task.id == middle.task_id
    assert await store.settle_step(again, StepOutcome(succeeded=True, result=b"4"))
    assert (await store.load_workflow(info.id)).state is WorkflowState.RUNNING
    [after] = await claim_all(broker)
    assert after.task.id == last.task_id


async def test_deleting_a_chord_member_fails_the_workflow(broker: Broker) -> None:
    app = make_app(broker)
    add, total = app.tasks["add"], app.tasks["total"]
    inspector = AsyncInspector(broker)
    store = workflows_of(broker)
    info = await app.aenqueue_workflow(chord([add.s(1, 1), add.s(2, 2)], total.s()))
    kept, deleted, body = info.steps
    await inspector.delete_task("default", deleted.task_id)
    failed = await inspector.get_workflow(info.id)
    assert failed.state is WorkflowState.FAILED
    assert (failed.failed_task, failed.error) == (deleted.task_id, "step deleted")
    gone = failed.steps[1].task  # no task left: shown from the workflow's record
    assert failed.steps[1].state is StepState.FAILED and gone is not None
    assert (gone.state, gone.last_error) == (TaskState.ARCHIVED, "step deleted")
    [lease] = await claim_all(broker)
    assert lease.task.id == kept.task_id
    assert await store.settle_step(lease, StepOutcome(succeeded=True, result=b"2"))
    assert await claim_all(broker) == []  # the body never runs
    rec = await store.load_workflow(info.id)
    assert rec.state is WorkflowState.FAILED
    assert rec.steps[2].state is StepState.WAITING
    with pytest.raises(TaskNotFoundError):
        await broker.get_task("default", body.task_id)


async def test_bulk_archive_and_queue_delete_fail_their_workflows(broker: Broker) -> None:
    app = make_app(broker)
    add = app.tasks["add"]
    inspector = AsyncInspector(broker)
    archived = await app.aenqueue_workflow(chain(add.s(1, 1), add.s(2)))
    deleted = await app.aenqueue_workflow(chain(add.s(1, 1).options(queue="other"), add.s(2)))
    plain = await app.async_client.enqueue(Task("add", [5, 5]))
    assert await inspector.archive_all_tasks("default", TaskState.PENDING) == 2
    assert (await broker.get_task("default", plain.id)).state is TaskState.ARCHIVED
    gone = await inspector.get_workflow(archived.id)
    assert (gone.state, gone.failed_task) == (WorkflowState.FAILED, archived.steps[0].task_id)
    await inspector.delete_queue("other", force=True)
    info = await inspector.get_workflow(deleted.id)
    assert (info.state, info.error) == (WorkflowState.FAILED, "step deleted")
    assert await claim_all(broker) == []  # neither workflow's second step runs


async def test_bulk_archive_of_steps_among_plain_tasks(broker: Broker) -> None:
    app = make_app(broker)
    add = app.tasks["add"]
    inspector = AsyncInspector(broker)
    plain = [await app.async_client.enqueue(Task("add", [i, i])) for i in range(3)]
    flows = [await app.aenqueue_workflow(chain(add.s(i, 1), add.s(2))) for i in range(3)]
    plain += [await app.async_client.enqueue(Task("add", [i, i])) for i in range(3)]
    assert await inspector.archive_all_tasks("default", TaskState.PENDING) == 9
    for info in plain:
        assert (await broker.get_task("default", info.id)).state is TaskState.ARCHIVED
    for flow in flows:
        assert (await inspector.get_workflow(flow.id)).state is WorkflowState.FAILED
    assert await inspector.archive_all_tasks("default", TaskState.PENDING) == 0
    assert await claim_all(broker) == []


async def test_bulk_delete_fails_the_workflow(broker: Broker) -> None:
    app = make_app(broker)
    add = app.tasks["add"]
    inspector = AsyncInspector(broker)
    info = await app.aenqueue_workflow(chain(add.s(1, 1).options(process_in=3600), add.s(2)))
    step = (await inspector.get_workflow(info.id)).steps[0]
    assert step.task_state is TaskState.SCHEDULED
    assert await inspector.delete_all_tasks("default", TaskState.SCHEDULED) == 1
    failed = await inspector.get_workflow(info.id)
    assert (failed.state, failed.error) == (WorkflowState.FAILED, "step deleted")


async def test_a_claimed_step_reads_its_input_and_a_later_read_sees_a_cancel(
    broker: Broker,
) -> None:
    app = make_app(broker)
    store: WorkflowBroker = workflows_of(broker)
    info = await app.async_client.enqueue_workflow(
        chain(signature("add", [1, 2]), signature("add", [10]))
    )
    [first] = await claim_all(broker)
    assert await store.settle_step(first, StepOutcome(succeeded=True, result=b"3"))
    [second] = await claim_all(broker)
    assert second.task.id == info.steps[1].task_id

    before = await store.load_step(info.id, 1)
    await store.cancel_workflow(info.id)
    after = await store.load_step(info.id, 1)

    assert before.state is WorkflowState.RUNNING and before.steps[0].result == b"3"
    assert after.state is WorkflowState.CANCELLED
