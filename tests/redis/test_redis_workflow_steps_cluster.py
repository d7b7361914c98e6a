"""A workflow's steps seen and changed from outside, on a real 3-node Redis Cluster.

There the inspector's archive or delete of a step records the workflow's failure in the
workflow's slot first (its error callbacks through the outbox), then archives or deletes the
task in its queue's slot; ``get_workflow`` reads every step's task in one pipelined call across
the nodes.
"""

from __future__ import annotations

import pytest

from conveyor import App, AsyncInspector, StepState, WorkflowState, chain, chord
from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.workflows import StepOutcome
from conveyor.errors import TaskNotFoundError
from conveyor.message import TaskState
from conveyor.workflows.running import workflows_of

pytestmark = [pytest.mark.process, pytest.mark.redis]


@pytest.fixture
def broker(cluster_broker: RedisBroker) -> RedisBroker:
    """A fresh namespace on the session's 3-node Cluster (tests/conftest.py)."""
    return cluster_broker


def make_app(broker: RedisBroker) -> App:
    app = App(broker)

    # Each task in its own queue, so a workflow's steps span several slots.
    @app.task(name="add", queue="qa", max_retry=3)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="total", queue="qb", max_retry=0)
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="on_error", queue="qc", max_retry=0)
    def on_error(error: str, tag: str) -> None:
        return None

    return app


async def test_steps_show_their_tasks_real_state(broker: RedisBroker) -> None:
    app = make_app(broker)
    add, total = app.tasks["add"], app.tasks["total"]
    info = await app.aenqueue_workflow(chord([add.s(1, 1), add.s(2, 2)], total.s()))
    leases = await broker.claim(["qa"], limit=2, lease_s=30)
    await broker.retry(leases[0], error="flaky", delay_s=3600)
    shown = await AsyncInspector(broker).get_workflow(info.id)
    states = {s.task_id: s.task_state for s in shown.steps}
    assert states == {
        leases[0].task.id: TaskState.RETRY,
        leases[1].task.id: TaskState.ACTIVE,
        info.steps[2].task_id: None,
    }


async def test_archiving_a_middle_step_fails_the_workflow(broker: RedisBroker) -> None:
    app = make_app(broker)
    add, on_error = app.tasks["add"], app.tasks["on_error"]
    inspector = AsyncInspector(broker)
    store = workflows_of(broker)
    info = await app.aenqueue_workflow(
        chain(add.s(1, 1), add.s(2).link_error(on_error.s("x")), add.s(3))
    )
    [lease] = await broker.claim(["qa"], limit=5, lease_s=30)
    assert await store.settle_step(lease, StepOutcome(succeeded=True, result=b"2"))
    await inspector.archive_task("qa", info.steps[1].task_id)
    failed = await inspector.get_workflow(info.id)
    assert (failed.state, failed.error) == (WorkflowState.FAILED, "archived by the inspector")
    assert failed.steps[1].task_state is TaskState.ARCHIVED
    [callback] = await broker.claim(["qc"], limit=5, lease_s=30)
    assert callback.task.id == info.steps[2].task_id
    assert await broker.claim(["qa"], limit=5, lease_s=30) == []
    with pytest.raises(TaskNotFoundError):
        await broker.get_task("qa", info.steps[3].task_id)
    # Running the archived step again resumes the workflow.
    await inspector.run_task("qa", info.steps[1].task_id)
    [again] = await broker.claim(["qa"], limit=5, lease_s=30)
    assert await store.settle_step(again, StepOutcome(succeeded=True, result=b"4"))
    assert (await store.load_workflow(info.id)).state is WorkflowState.RUNNING
    [last] = await broker.claim(["qa"], limit=5, lease_s=30)
    assert last.task.id == info.steps[3].task_id


async def test_deleting_a_chord_member_fails_the_workflow(broker: RedisBroker) -> None:
    app = make_app(broker)
    add, total = app.tasks["add"], app.tasks["total"]
    inspector = AsyncInspector(broker)
    store = workflows_of(broker)
    info = await app.aenqueue_workflow(chord([add.s(1, 1), add.s(2, 2)], total.s()))
    await inspector.delete_task("qa", info.steps[1].task_id)
    failed = await inspector.get_workflow(info.id)
    assert (failed.state, failed.error) == (WorkflowState.FAILED, "step deleted")
    [lease] = await broker.claim(["qa"], limit=5, lease_s=30)
    assert await store.settle_step(lease, StepOutcome(succeeded=True, result=b"2"))
    assert await broker.claim(["qb"], limit=5, lease_s=30) == []  # the body never runs
    assert (await store.load_workflow(info.id)).steps[2].state is StepState.WAITING
