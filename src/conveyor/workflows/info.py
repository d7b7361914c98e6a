"""What a workflow looks like from outside: :class:`WorkflowInfo` and its steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from conveyor.brokers.workflow_engine import Graph, evaluate, parse_graph
from conveyor.brokers.workflows import (
    StepRecord,
    StepState,
    WorkflowBroker,
    WorkflowRecord,
    WorkflowState,
)
from conveyor.message import JSONValue, TaskInfo, TaskMessage, TaskState

__all__ = ["WorkflowInfo", "WorkflowStep", "load_infos"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowStep:
    """One step (task) of a workflow.

    Attributes:
        position: where it sits in the canvas: ``"0.1.header.3"`` is the fourth header member
            of the chord that is the second item of the top-level chain; callbacks end in
            ``.link<n>`` / ``.error<n>``.
        task_id: the step's task id (``wf.<workflow id>.<index>``).
        queue: the queue its task runs in.
        type: its task type.
        state: waiting, enqueued, succeeded, failed or cancelled.
        result: its result once it succeeded, else ``None``.
        error: its task's last error once it failed, else ``None``.
        error_callback: whether it is an error callback (runs only when its task failed).
        task: the step's task as a :class:`~conveyor.TaskInfo` (``position`` above says where
            it sits), once it was enqueued. From ``Inspector.get_workflow`` and
            ``list_workflows`` it is the task's own record, read with every other step's in
            one broker call: its real state (pending, scheduled, active, retry, archived,
            completed), retried count, last error, next run and result. A step whose task is
            gone (it completed without a retention, was deleted or purged) shows COMPLETED
            with its recorded result or ARCHIVED with its error, built from the workflow's
            record, as every step is in the info ``enqueue_workflow`` returns. ``None`` while
            the step waits for its inputs, and for a cancelled step that has no task.
    """

    position: str
    task_id: str
    queue: str
    type: str
    state: StepState
    result: JSONValue
    error: str | None
    error_callback: bool
    task: TaskInfo | None = None

    @property
    def task_state(self) -> TaskState | None:
        """The state of the step's task (:attr:`task`), or ``None`` while it has none."""
        return None if self.task is None else self.task.state


# How a step's state shows as its task's (the steps with no task map to None).
_TASK_STATE = {
    StepState.ENQUEUED: TaskState.PENDING,
    StepState.SUCCEEDED: TaskState.COMPLETED,
    StepState.FAILED: TaskState.ARCHIVED,
}


def _task(message: TaskMessage, step: StepRecord, found: TaskInfo | None) -> TaskInfo | None:
    if found is not None:
        return found
    state = _TASK_STATE.get(step.state)
    if state is None:
        return None
    return TaskInfo.from_message(
        message,
        state=state,
        enqueued_at=None,
        next_process_at=None,
        last_error=step.error,
        raw_result=step.result if state is TaskState.COMPLETED else None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowInfo:
    """A snapshot of a workflow, from ``enqueue_workflow`` or ``Inspector.get_workflow``.

    Attributes:
        id: the workflow id.
        state: pending, running, succeeded, failed or cancelled.
        steps: every step (task) of the workflow, in compile order (a chord of n members has
            n + 1 steps, its body included; callbacks that ran are steps too), each with its
            position and, once it was enqueued, its task's :class:`~conveyor.TaskInfo`
            (:attr:`WorkflowStep.task`: its real state, from the task's own record); steps
            not yet enqueued appear too, ``waiting``.
        result: the last step's result for a chain, the list for a group, the body's for a
            chord; ``None`` until the workflow succeeded.
        error: the first archived step's last error, else ``None``.
        failed_task: the id of that step's task, else ``None``.
        created_at: when it was enqueued (broker clock).
        finished_at: when it succeeded, failed or was cancelled.
    """

    id: str
    state: WorkflowState
    steps: tuple[WorkflowStep, ...]
    result: JSONValue
    error: str | None
    failed_task: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_record(
        cls,
        rec: WorkflowRecord,
        tasks: Mapping[str, TaskInfo] | None = None,
        *,
        graph: Graph | None = None,
    ) -> WorkflowInfo:
        """Build the info of a stored workflow; ``tasks`` (by task id) are its steps' tasks
        as stored (:func:`load_infos` reads them), else each step's task is built from the
        workflow's record. ``graph``: its graph already parsed (else parsed here)."""
        if graph is None:
            graph = parse_graph(rec.graph)
        found = tasks or {}
        steps = tuple(
            WorkflowStep(
                position=spec.position,
                task_id=spec.message.id,
                queue=spec.message.queue,
                type=spec.message.type,
                state=step.state,
                result=step.decoded_result(),
                error=step.error,
                error_callback=spec.trigger is not None,
                task=_task(spec.message, step, found.get(spec.message.id)),
            )
            for spec, step in zip(graph.steps, rec.steps, strict=True)
        )
        succeeded = rec.state is WorkflowState.SUCCEEDED
        return cls(
            id=rec.id,
            state=rec.state,
            steps=steps,
            result=evaluate(graph.result, rec.steps) if succeeded else None,
            error=rec.error,
            failed_task=rec.failed_task,
            created_at=rec.created_at,
            finished_at=rec.finished_at,
        )


async def load_infos(
    store: WorkflowBroker, records: Sequence[WorkflowRecord]
) -> list[WorkflowInfo]:
    """The infos of ``records``, each step's task read from the broker: one call for all."""
    wanted = [
        (spec.message.queue, spec.message.id)
        for rec in records
        for spec, step in zip(parse_graph(rec.graph).steps, rec.steps, strict=True)
        if step.state is not StepState.WAITING
    ]
    found = await store.get_tasks(wanted) if wanted else []
    tasks = {info.id: info for info in found if info is not None}
    return [WorkflowInfo.from_record(rec, tasks) for rec in records]
