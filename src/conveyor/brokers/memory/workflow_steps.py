"""Workflow steps changed from outside the worker, on the memory broker.

The inspector's archive and delete of a step's task (one task, a state's tasks, a whole queue)
fail its workflow under the lock that archives or deletes it: nothing after the step runs, a
chord's body never does, and the step's error callbacks are enqueued.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.brokers.workflows import StepOutcome, parse_step_task_id

if TYPE_CHECKING:
    from conveyor.brokers import workflow_engine as engine
    from conveyor.brokers.memory.state import _State, _Task
    from conveyor.message import TaskMessage

__all__ = ["ARCHIVED_ERROR", "DELETED_ERROR", "MemoryWorkflowSteps"]

ARCHIVED_ERROR = "archived by the inspector"
"""A step's error when the inspector archived its task (unless the task had a last error)."""
DELETED_ERROR = "step deleted"
"""A step's error when the inspector deleted its task (or its queue)."""


class MemoryWorkflowSteps:
    """Failing a step's workflow when the inspector archives or deletes its task (a mixin)."""

    if TYPE_CHECKING:  # provided by MemoryBroker and MemoryWorkflows

        def _workflow_change(
            self, s: _State, task_id: str, outcome: StepOutcome
        ) -> tuple[engine.Graph, engine.Change] | None: ...
        def _check_new(
            self,
            s: _State,
            messages: list[TaskMessage],
            now: float,
            owner: tuple[str, str] | None = None,
        ) -> None: ...
        def _apply(
            self, s: _State, change: engine.Change, messages: list[TaskMessage], now: float
        ) -> None: ...

    def _fail_step(self, s: _State, task_id: str, error: str, now: float) -> None:
        if parse_step_task_id(task_id) is None:
            return
        found = self._workflow_change(s, task_id, StepOutcome(succeeded=False, error=error))
        if found is not None:
            graph, change = found
            messages = change.messages(graph)
            self._check_new(s, messages, now)
            self._apply(s, change, messages, now)

    def _step_archived(self, s: _State, t: _Task, now: float) -> None:
        """Under the lock that archived ``t``: fail its workflow, if it is a step."""
        self._fail_step(s, t.msg.id, t.last_error or ARCHIVED_ERROR, now)

    def _step_deleted(self, s: _State, t: _Task, now: float) -> None:
        """Under the lock that deleted ``t``: fail its workflow, if it is a step."""
        self._fail_step(s, t.msg.id, DELETED_ERROR, now)
