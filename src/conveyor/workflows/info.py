"""What a workflow looks like from outside: :class:`WorkflowInfo` and its steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from conveyor.brokers.workflow_engine import evaluate, parse_graph
from conveyor.brokers.workflows import StepRecord, StepState, WorkflowRecord, WorkflowState
from conveyor.message import JSONValue, TaskInfo, TaskMessage, TaskState

__all__ = ["WorkflowInfo", "WorkflowStep"]


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
        task: the step as a :class:`~conveyor.TaskInfo` (its message, with ``position`` above
            saying where it sits), once its task exists: PENDING while the step is enqueued
            (the workflow's record does not tell pending, active and retrying apart: ask
            ``Inspector.get_task(step.queue, step.task_id)`` for that), COMPLETED with its
            result, ARCHIVED with its last error. ``None`` while the step waits for its
            inputs, and for a step cancelled before it started.
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


# How a step's state shows as its task's (the steps with no task map to None).
_TASK_STATE = {
    StepState.ENQUEUED: TaskState.PENDING,
    StepState.SUCCEEDED: TaskState.COMPLETED,
    StepState.FAILED: TaskState.ARCHIVED,
}


def _task(message: TaskMessage, step: StepRecord) -> TaskInfo | None:
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
        steps: every step, in compile order (a chord of n members has n + 1 steps), each with
            its position and, once its task exists, its :class:`~conveyor.TaskInfo`
            (:attr:`WorkflowStep.task`).
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
    def from_record(cls, rec: WorkflowRecord) -> WorkflowInfo:
        """Build the info of a stored workflow."""
        graph = parse_graph(rec.graph)
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
                task=_task(spec.message, step),
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
