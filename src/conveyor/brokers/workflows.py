"""The workflows seam: storing a workflow and advancing it atomically with its steps' outcomes.

A workflow is a graph of steps (tasks) compiled from a canvas (chains, groups, chords) by
:mod:`conveyor.workflows`. The graph is stored once, as JSON, and never changes; beside it the
broker keeps the workflow's state and, per step, a state, a result and an error. Every change is
decided by the pure transition functions of :mod:`conveyor.brokers.workflow_engine` and applied
in ONE atomic broker step together with the task transition that caused it:

    settle_step(lease, success)  the step's task completes (lease checked), its result is
                                 recorded and every step that became ready is enqueued
                                 (and, when asked, the next step of a chain is leased to
                                 the caller at once: an eager continuation, see below)
    settle_step(lease, failure)  the step's task is archived, the workflow fails and the step's
                                 error callbacks are enqueued
    recover_expired (archiving)  the same failure, inside the backend's recovery step
    cancel_workflow              steps not yet started are cancelled

So a crash never leaves a recorded result without its successors, nor a completed task whose
result is lost; a chord body is enqueued by the one transition that records its last header
member, under the broker's serialisation (a lock, a transaction, a compare-and-set).

An eager continuation: a worker settling a step successfully names the queues it would claim
from (``StepOutcome.continue_on``). When a step that became ready goes to one of them, takes its
input from the settled step alone (a chain's next step), is due now, and a claim would hand it
over (its queue is not paused, no rate or concurrency limit names its type or queue), the same
atomic step stores it ACTIVE under a new lease with a fresh fencing token, exactly as a claim
would, and returns it as a :class:`Continuation`: the worker runs it in the same slot with no
claim, no read of its input and no wake-up. A worker that dies after the settlement holds it
like any claimed task: its lease lapses and recovery puts it back.

A step's task id is ``wf.<workflow id>.<step index>`` (:func:`step_task_id`), so any component
holding a lease knows whether it is a workflow step without another lookup.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from conveyor.message import JSONValue, Lease, TaskInfo, TaskMessage, decode_json

__all__ = [
    "Continuation",
    "NewWorkflow",
    "StepOutcome",
    "StepRecord",
    "StepState",
    "WorkflowBroker",
    "WorkflowRecord",
    "WorkflowState",
    "initial_record",
    "parse_step_task_id",
    "step_task_id",
]

DEFAULT_WORKFLOW_RETENTION_S = 86400.0
"""How long a finished workflow and its step results are kept by default (one day)."""

_STEP_ID = re.compile(r"wf\.([A-Za-z0-9-]{1,64})\.([0-9]{1,7})")


def step_task_id(workflow_id: str, index: int) -> str:
    """The task id of step ``index`` of workflow ``workflow_id``."""
    return f"wf.{workflow_id}.{index}"


def parse_step_task_id(task_id: str) -> tuple[str, int] | None:
    """``(workflow id, step index)`` for a workflow step's task id, else ``None``."""
    found = _STEP_ID.fullmatch(task_id)
    return None if found is None else (found.group(1), int(found.group(2)))


class WorkflowState(enum.StrEnum):
    """Where a workflow is: lower-case values, like :class:`~conveyor.TaskState`'s."""

    PENDING = "pending"
    """Enqueued; no step has finished yet."""
    RUNNING = "running"
    """At least one step finished; more are to run."""
    SUCCEEDED = "succeeded"
    """Every step succeeded; :attr:`WorkflowInfo.result` holds the result."""
    FAILED = "failed"
    """A step was archived; nothing after it runs (its error callbacks do)."""
    CANCELLED = "cancelled"
    """Cancelled by ``Inspector.cancel_workflow``: steps not yet started never start."""


FINISHED = frozenset({WorkflowState.SUCCEEDED, WorkflowState.FAILED, WorkflowState.CANCELLED})


class StepState(enum.StrEnum):
    """Where one step of a workflow is."""

    WAITING = "waiting"
    """Its inputs are not all there yet: no task exists for it."""
    ENQUEUED = "enqueued"
    """Its task is stored (pending, active or retrying)."""
    SUCCEEDED = "succeeded"
    """Its task completed; the step's result is kept with the workflow."""
    FAILED = "failed"
    """Its task was archived."""
    CANCELLED = "cancelled"
    """The workflow was cancelled before the step started (or its failure made it moot)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    """What the broker keeps for one step beside the graph."""

    state: StepState = StepState.WAITING
    result: bytes | None = None
    error: str | None = None

    def decoded_result(self) -> JSONValue:
        """The step's result as a JSON value (``None`` when there is none)."""
        return None if self.result is None else decode_json(self.result)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowRecord:
    """A stored workflow: its immutable graph, its state and its steps' records.

    ``version`` grows by one at every change; a backend that advances a workflow by
    compare-and-set (Redis) writes only over the version it read.
    """

    id: str
    graph: bytes
    state: WorkflowState
    steps: tuple[StepRecord, ...]
    created_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    failed_task: str | None = None
    retention_s: float = DEFAULT_WORKFLOW_RETENTION_S
    version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class NewWorkflow:
    """A workflow to store: its graph (JSON), its first steps' messages and its retention."""

    id: str
    graph: bytes
    steps: int
    first: tuple[TaskMessage, ...]
    retention_s: float = DEFAULT_WORKFLOW_RETENTION_S


# One shared record per state of a step just stored (records are immutable).
_ENQUEUED = StepRecord(state=StepState.ENQUEUED)
_WAITING = StepRecord(state=StepState.WAITING)


def initial_record(workflow: NewWorkflow, created_at: datetime) -> WorkflowRecord:
    """The record of ``workflow`` as just stored: PENDING, its first steps ENQUEUED and the
    others WAITING."""
    enqueued = {step[1] for m in workflow.first if (step := parse_step_task_id(m.id))}
    return WorkflowRecord(
        id=workflow.id,
        graph=workflow.graph,
        state=WorkflowState.PENDING,
        steps=tuple(_ENQUEUED if i in enqueued else _WAITING for i in range(workflow.steps)),
        created_at=created_at,
        retention_s=workflow.retention_s,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutcome:
    """How an attempt of a workflow step ended: a success with its result, or a failure.

    ``continue_on`` asks for an eager continuation (see the module docstring): the queues the
    settling worker would claim from now, and ``continue_lease_s`` the lease to take; empty (the
    default), nothing is leased and every ready step is enqueued.
    """

    succeeded: bool
    result: bytes = b"null"
    error: str = ""
    continue_on: frozenset[str] = frozenset()
    continue_lease_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Continuation:
    """The next step of a chain, leased to the worker that settled the step before it.

    ``lease`` is a real lease (ACTIVE, a new fencing token, renewed and settled as any claimed
    task's); ``parent_result`` is the step's input, its parent's encoded result (``None`` for an
    immutable step, which takes none); ``prepend`` tells whether a task function receives it as
    its first argument.
    """

    lease: Lease
    parent_result: bytes | None
    prepend: bool


@runtime_checkable
class WorkflowBroker(Protocol):
    """Storage for workflows, beside :class:`~conveyor.brokers.protocol.Broker`."""

    async def create_workflow(self, workflow: NewWorkflow) -> datetime | None:
        """Store the workflow (state PENDING) and enqueue its first steps, all or nothing;
        return when it was created (broker clock), so that its record as stored is
        :func:`initial_record` without reading it back (``None``: read it back).

        Raises:
            TaskIdConflictError: a step's task id exists already (the workflow id was reused).
        """
        ...

    async def load_workflow(self, workflow_id: str) -> WorkflowRecord:
        """The stored workflow, results included.

        Raises:
            WorkflowNotFoundError: no such workflow (never stored, or purged).
        """
        ...

    async def load_step(self, workflow_id: str, index: int) -> WorkflowRecord:
        """The workflow as one step needs it before running: its own record, and the records
        (results, errors) of the steps its input comes from; other steps may be left out
        (shown WAITING), so a chord's members do not each read the whole chord.

        Raises:
            WorkflowNotFoundError: no such workflow.
        """
        ...

    async def list_workflows(
        self, state: WorkflowState | None, *, offset: int = 0, limit: int = 50
    ) -> list[WorkflowRecord]:
        """A page of workflows, newest first, in ``state`` (any state for ``None``)."""
        ...

    async def settle_step(self, lease: Lease, outcome: StepOutcome) -> bool | Continuation:
        """Complete (or archive) a step's task and advance its workflow, in one atomic step.

        A success records the result and enqueues every step that became ready; a failure
        archives the task with ``outcome.error``, fails the workflow and enqueues the step's
        error callbacks. Returns ``False``, changing nothing, when the lease was lost; ``True``
        once settled; or, when ``outcome.continue_on`` asked for it and the rules allow it, the
        :class:`Continuation` leased in the same step (a backend may always decline and return
        ``True``: Redis Cluster does).
        """
        ...

    async def cancel_workflow(self, workflow_id: str) -> bool:
        """Cancel a pending or running workflow; ``False`` when it had already finished.

        Raises:
            WorkflowNotFoundError: no such workflow.
        """
        ...

    async def purge_workflows(self) -> int:
        """Delete finished workflows past their retention; return how many."""
        ...

    async def wait_workflow(self, workflow_id: str, timeout_s: float) -> WorkflowState:
        """Return the workflow's state once it finished, or after ``timeout_s`` (woken by the
        broker when it changes, never by polling fast).

        Raises:
            WorkflowNotFoundError: no such workflow.
        """
        ...

    async def get_tasks(self, tasks: Sequence[tuple[str, str]]) -> list[TaskInfo | None]:
        """Several tasks, each named by ``(queue, task id)``, in one read (a workflow's steps):
        the list in the same order, ``None`` for a task that does not exist (or cannot be
        decoded). A workflow of a thousand steps is one call, not a thousand."""
        ...
