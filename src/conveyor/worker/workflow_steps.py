"""What the executor does differently for a workflow step: its input before, its outcome after.

Before the handler runs, the step's input is read from its workflow (the parent's result, a
chord's list, or an error callback's error) and put on the :class:`TaskContext`. After it, the
outcome goes through :meth:`~conveyor.brokers.workflows.WorkflowBroker.settle_step`, which
completes (or archives) the task and advances the workflow in one atomic broker step, and may
hand back the chain's next step already leased (an eager continuation) with its input, so
:meth:`StepRunner.prepare_continued` sets that input without reading the workflow.
"""

from __future__ import annotations

from conveyor.brokers.protocol import Broker
from conveyor.brokers.workflow_engine import evaluate, parse_graph, should_run
from conveyor.brokers.workflows import (
    Continuation,
    StepOutcome,
    StepState,
    WorkflowBroker,
    parse_step_task_id,
)
from conveyor.errors import LeaseLostError, WorkflowNotFoundError
from conveyor.message import Encoding, Lease
from conveyor.worker.attempt import fast_decode
from conveyor.worker.context import TaskContext

__all__ = ["StepRunner"]


class StepRunner:
    """Reads workflow steps' inputs and settles their outcomes, for one executor."""

    def __init__(self, broker: Broker) -> None:
        self._store = broker if isinstance(broker, WorkflowBroker) else None

    def is_step(self, lease: Lease) -> bool:
        """Whether the leased task is a workflow step (and the broker stores workflows)."""
        return self._store is not None and parse_step_task_id(lease.task.id) is not None

    async def prepare(self, lease: Lease, ctx: TaskContext) -> bool | StepOutcome:
        """Put the step's input on ``ctx`` and return ``True`` to run the handler; ``False``
        when its workflow cancelled it (end the task without running it); the recorded
        outcome when the step had succeeded already (settle it with that, without running)."""
        step = parse_step_task_id(lease.task.id)
        if self._store is None or step is None:
            return True
        try:
            rec = await self._store.load_step(step[0], step[1])
        except WorkflowNotFoundError:
            return True  # purged, or a task that merely looks like a step: run it as a task
        graph = parse_graph(rec.graph)
        if step[1] >= len(graph.steps):
            return True
        if not should_run(rec, step[1]):
            return False
        own = rec.steps[step[1]]
        if own.state is StepState.SUCCEEDED:
            # Recorded already, its task not yet completed: the worker settling it died between
            # the two (Redis Cluster settles in ordered steps), or a repeated outbox drain stored
            # the task again: the settlement is finished without running the handler again.
            return StepOutcome(succeeded=True, result=own.result or b"null")
        spec = graph.steps[step[1]]
        if spec.trigger is not None:
            error = rec.steps[spec.trigger].error or ""
            ctx.parent_error = error
            if spec.prepend:
                ctx.parent_arg = (error,)
        elif spec.input is not None:
            value = evaluate(spec.input, rec.steps)
            ctx.parent_result = value
            if spec.prepend:
                ctx.parent_arg = (value,)
        return True

    @staticmethod
    def prepare_continued(continued: Continuation, ctx: TaskContext) -> None:
        """Put a continued step's input, handed over by the settlement, on ``ctx``."""
        if continued.parent_result is None:
            return
        value = fast_decode(continued.parent_result, Encoding.JSON)
        ctx.parent_result = value
        if continued.prepend:
            ctx.parent_arg = (value,)

    async def settle(self, lease: Lease, outcome: StepOutcome) -> Continuation | None:
        """Record the step's outcome and advance its workflow, in one broker step; return the
        next step when the broker leased it to this worker (``outcome.continue_on``).

        Raises:
            LeaseLostError: the lease was lost; nothing changed.
        """
        assert self._store is not None
        settled = await self._store.settle_step(lease, outcome)
        if not settled:
            raise LeaseLostError(task_id=lease.task.id, queue=lease.task.queue)
        return settled if isinstance(settled, Continuation) else None
