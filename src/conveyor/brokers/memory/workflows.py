"""Workflows on the memory broker: the reference implementation of the workflows seam.

Every transition runs under the broker's one lock, together with the task transition that caused
it: a step's completion (or archive) and its workflow's advance are one step, and two chord
members finishing at once are simply serialised. Changes come from the pure functions of
:mod:`~conveyor.brokers.workflow_engine`; this module only stores what they decide.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.memory.results import KeyedWaiters, add_waiter, drop_waiter, wake_waiters
from conveyor.brokers.workflows import (
    FINISHED,
    Continuation,
    NewWorkflow,
    StepOutcome,
    WorkflowRecord,
    WorkflowState,
    initial_record,
    parse_step_task_id,
)
from conveyor.errors import TaskIdConflictError, WorkflowNotFoundError
from conveyor.message import Lease, TaskMessage, TaskState, to_datetime

if TYPE_CHECKING:
    from conveyor.brokers.memory.state import _State, _Task

__all__ = ["MemoryWorkflows", "WorkflowStore"]


@dataclass(slots=True)
class WorkflowStore:
    """The memory broker's workflows, kept in its shared state (under its lock)."""

    records: dict[str, WorkflowRecord] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)  # id -> finished time (broker clock)
    waiters: KeyedWaiters[str] = field(default_factory=dict)  # woken when the workflow finishes


class MemoryWorkflows:
    """The workflow half of :class:`~conveyor.brokers.memory.MemoryBroker` (a mixin)."""

    if TYPE_CHECKING:  # provided by MemoryBroker
        clock: Callable[[], float]
        _state: _State

        def _locked(self) -> contextlib.AbstractContextManager[_State]: ...
        def _active(self, s: _State, lease: Lease) -> _Task | None: ...
        def _check_new(
            self,
            s: _State,
            messages: list[TaskMessage],
            now: float,
            owner: tuple[str, str] | None = None,
        ) -> None: ...
        def _store(self, s: _State, m: TaskMessage, now: float) -> _Task: ...
        def _unlock(self, s: _State, t: _Task) -> None: ...
        def _count(self, s: _State, queue: str, now: float, *, failed: bool) -> None: ...
        def _fail(self, s: _State, t: _Task, error: str, now: float) -> None: ...
        def _to_settled(self, s: _State, t: _Task, state: TaskState, now: float) -> None: ...
        def _freed(self, s: _State, t: _Task) -> None: ...
        def _started(self, s: _State, t: _Task) -> None: ...

    async def create_workflow(self, workflow: NewWorkflow) -> datetime:
        """Store the workflow and enqueue its first steps, all or nothing; return when."""
        with self._locked() as s:
            return self._create_workflow(s, workflow, self.clock())

    def _create_workflow(self, s: _State, workflow: NewWorkflow, now: float) -> datetime:
        """Create it under the lock held (a schedule's fire calls it too); return when."""
        if workflow.id in s.workflows.records:
            raise_conflict(workflow)
        self._check_new(s, list(workflow.first), now)
        for m in workflow.first:
            self._store(s, m, now)
        created = to_datetime(now)
        assert created is not None
        s.workflows.records[workflow.id] = initial_record(workflow, created)
        return created

    async def load_workflow(self, workflow_id: str) -> WorkflowRecord:
        """The stored workflow, results included."""
        with self._locked() as s:
            rec = s.workflows.records.get(workflow_id)
            if rec is None:
                raise WorkflowNotFoundError(workflow_id)
            return rec

    async def load_step(self, workflow_id: str, index: int) -> WorkflowRecord:
        """The whole workflow (reading it all costs nothing here)."""
        return await self.load_workflow(workflow_id)

    async def list_workflows(
        self, state: WorkflowState | None, *, offset: int = 0, limit: int = 50
    ) -> list[WorkflowRecord]:
        """A page of workflows, newest first."""
        with self._locked() as s:
            found = [r for r in s.workflows.records.values() if state is None or r.state is state]
            found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
            return found[max(offset, 0) : max(offset, 0) + max(limit, 0)]

    async def settle_step(self, lease: Lease, outcome: StepOutcome) -> bool | Continuation:
        """Complete or archive the step's task and advance its workflow, under one lock (and
        lease the next step of a chain to the caller when ``outcome.continue_on`` allows)."""
        with self._locked() as s:
            now = self.clock()
            t = self._active(s, lease)
            if t is None:
                return False
            change = self._workflow_change(s, t.msg.id, outcome)
            messages = [] if change is None else change[1].messages(change[0])
            self._check_new(s, messages, now)
            if outcome.succeeded:
                self._unlock(s, t)
                if t.msg.retention_s > 0:
                    t.result, t.completed_at = outcome.result, now
                    self._to_settled(s, t, TaskState.COMPLETED, now)
                else:
                    del s.queues[t.msg.queue].tasks[t.msg.id]
                self._count(s, t.msg.queue, now, failed=False)
            else:
                self._fail(s, t, outcome.error, now)
                self._to_settled(s, t, TaskState.ARCHIVED, now)
            self._freed(s, t)  # its concurrency slot (limits.py), as for a plain task
            if change is None:
                return True
            self._apply(s, change[1], messages, now)
            if not (outcome.succeeded and outcome.continue_on):
                return True
            return self._continue(s, change, t.msg.id, outcome, now) or True

    def _continue(
        self,
        s: _State,
        change: tuple[engine.Graph, engine.Change],
        task_id: str,
        outcome: StepOutcome,
        now: float,
    ) -> Continuation | None:
        """Lease the chain's next step, just stored, to the settling worker, as a claim would:
        only when its queue is not paused and no rate or concurrency limit names it."""
        from conveyor.brokers.memory.state import _info  # state.py imports this module

        graph, ch = change
        step = parse_step_task_id(task_id)
        assert step is not None
        spec = engine.continuation(graph, ch.enqueue, step[1], outcome.continue_on)
        if spec is None:
            return None
        m, limits = spec.message, s.limits
        q = s.queues[m.queue]
        if (
            q.paused
            or m.type in limits.rates
            or m.type in limits.task_concurrency
            or m.queue in limits.queue_concurrency
        ):
            return None
        t = q.tasks[m.id]
        if t.state is not TaskState.PENDING:
            return None
        t.token = next(s.counter)
        t.lease_expires_at = now + outcome.continue_lease_s
        self._to_settled(s, t, TaskState.ACTIVE, now)  # a new heap mark: its entry is stale
        self._started(s, t)
        lease = Lease(task=_info(t), token=t.token, expires_at=t.lease_expires_at)
        return Continuation(
            lease=lease,
            parent_result=engine.continued_input(spec, outcome.result),
            prepend=spec.prepend,
        )

    def _on_archived(self, s: _State, t: _Task, now: float) -> None:
        """A task was archived by the broker itself (recovery, archive): fail its step."""
        change = self._workflow_change(
            s, t.msg.id, StepOutcome(succeeded=False, error=t.last_error or "archived")
        )
        if change is not None:
            messages = change[1].messages(change[0])
            self._check_new(s, messages, now)
            self._apply(s, change[1], messages, now)

    def _workflow_change(
        self, s: _State, task_id: str, outcome: StepOutcome
    ) -> tuple[engine.Graph, engine.Change] | None:
        step = parse_step_task_id(task_id)
        rec = None if step is None else s.workflows.records.get(step[0])
        if step is None or rec is None or step[1] >= len(rec.steps):
            return None
        graph = engine.parse_graph(rec.graph)
        change = engine.settle(graph, rec, step[1], outcome)
        return None if change is None else (graph, change)

    def _apply(
        self, s: _State, change: engine.Change, messages: list[TaskMessage], now: float
    ) -> None:
        for m in messages:
            self._store(s, m, now)
        rec = change.record
        store = s.workflows
        if change.finished:
            rec = replace(rec, finished_at=to_datetime(now))
            store.finished[rec.id] = now
        elif change.reopened:
            rec = replace(rec, finished_at=None)
            store.finished.pop(rec.id, None)
        store.records[rec.id] = rec
        if change.finished:
            wake_waiters(store.waiters, rec.id)

    async def cancel_workflow(self, workflow_id: str) -> bool:
        """Cancel a workflow not yet finished; its steps not yet started never start."""
        with self._locked() as s:
            rec = s.workflows.records.get(workflow_id)
            if rec is None:
                raise WorkflowNotFoundError(workflow_id)
            change = engine.cancel(rec)
            if change is None:
                return False
            self._apply(s, change, [], self.clock())
            return True

    async def purge_workflows(self) -> int:
        """Delete finished workflows past their retention."""
        with self._locked() as s:
            now = self.clock()
            store = s.workflows
            old = [
                wid
                for wid, at in store.finished.items()
                if at + store.records[wid].retention_s <= now
            ]
            for wid in old:
                del store.records[wid], store.finished[wid]
            return len(old)

    async def wait_workflow(self, workflow_id: str, timeout_s: float) -> WorkflowState:
        """Wait, woken when the workflow finishes, until it finished or ``timeout_s`` passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            future: asyncio.Future[None] = loop.create_future()
            with self._locked() as s:
                rec = s.workflows.records.get(workflow_id)
                if rec is None:
                    raise WorkflowNotFoundError(workflow_id)
                remaining = deadline - loop.time()
                if rec.state in FINISHED or remaining <= 0:
                    return rec.state
                entry = (loop, future)
                add_waiter(s.workflows.waiters, workflow_id, entry)
            try:
                await asyncio.wait([future], timeout=remaining)
            finally:
                with self._state.lock:
                    drop_waiter(s.workflows.waiters, workflow_id, entry)


def raise_conflict(workflow: NewWorkflow) -> None:
    """Refuse a workflow whose id is taken."""
    first = workflow.first[0] if workflow.first else None
    raise TaskIdConflictError(
        f"workflow {workflow.id!r} already exists",
        task_id="" if first is None else first.id,
        queue="" if first is None else first.queue,
    )
