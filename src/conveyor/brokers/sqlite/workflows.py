"""Workflows on SQLite: each transition is one write transaction with the task change behind it.

A step's completion (lease checked, task completed or deleted), the record of its result and
the enqueue of the steps it made ready are one ``BEGIN IMMEDIATE`` transaction, so two chord
members finishing at once (in two processes) are serialised by SQLite's write lock and the body
is enqueued by exactly one of them. Recovery that archives a step fails its workflow in the
recovery's own transaction (:func:`fail_archived_steps`, called from ``Store``). Settlements
(and the steps they hand over to the settling worker): :mod:`.workflow_settle`. Tables and
queries: ``workflows.sql``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.combiner import Combiner, PerLoop
from conveyor.brokers.sqlite.workflow_reads import Step as _Step
from conveyor.brokers.sqlite.workflow_reads import load_record as _load
from conveyor.brokers.sqlite.workflow_reads import load_steps as _load_steps
from conveyor.brokers.sqlite.workflow_reads import workflow_queries as _q
from conveyor.brokers.sqlite.workflow_settle import change_for, settle_many, write_change
from conveyor.brokers.workflows import (
    FINISHED,
    Continuation,
    NewWorkflow,
    StepOutcome,
    StepState,
    WorkflowRecord,
    WorkflowState,
    parse_step_task_id,
)
from conveyor.errors import (
    TaskIdConflictError,
    WorkflowNotFoundError,
)
from conveyor.message import Lease, to_datetime

if TYPE_CHECKING:
    import sqlite3

    from conveyor.brokers.sqlite.store import Store

__all__ = [
    "SqliteWorkflows",
    "apply_schema",
    "create_workflow_in",
    "fail_archived_steps",
    "fail_step",
]

T = TypeVar("T")
# How often a waiter re-reads a workflow when no wake-up came (a wake from another process
# can be missed when its socket is gone); local changes wake it at once.
_RECHECK_S = 0.05


def apply_schema(conn: sqlite3.Connection) -> None:
    """Create the workflow tables if missing (idempotent; run when a connection opens)."""
    conn.executescript(_q()["schema"])
    if "graph" in {row[1] for row in conn.execute("PRAGMA table_info(workflows)")}:
        _move_graphs(conn)


def _move_graphs(conn: sqlite3.Connection) -> None:
    """Move the graphs of a file made before they had a table of their own, under the write
    lock (processes opening the file at once move them once)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if "graph" in {row[1] for row in conn.execute("PRAGMA table_info(workflows)")}:
            conn.execute("INSERT OR REPLACE INTO workflow_graphs SELECT id, graph FROM workflows")
            conn.execute("ALTER TABLE workflows DROP COLUMN graph")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def fail_archived_steps(store: Store, now: float) -> None:
    """Fail the workflows of steps archived in the current transaction at ``now`` (recovery)."""
    found = store.conn.execute(_q()["archived_steps"], (now, now)).fetchall()
    for task_id, error in found:
        fail_step(store, task_id, error or "archived", now)


def fail_step(store: Store, task_id: str, error: str, now: float) -> None:
    """If ``task_id`` is a workflow step just archived: fail its workflow (same transaction)."""
    found = change_for(store, task_id, StepOutcome(succeeded=False, error=error))
    if found is not None:
        rec, graph, change = found
        store._insert(change.messages(graph), now, owner=None, infos=False)
        write_change(store, rec, change, now)


# How many steps' inputs, read with their claim, may wait for their load_step: more are
# dropped (a step whose claim was never started reads its inputs again if it ever starts).
_INPUTS_KEPT = 4096


def _state(store: Store, workflow_id: str) -> WorkflowState:
    row = store.conn.execute(_q()["get_state"], (workflow_id,)).fetchone()
    if row is None:
        raise WorkflowNotFoundError(workflow_id)
    return WorkflowState(row[0])


def _create(store: Store, workflow: NewWorkflow) -> datetime:
    with store.write() as now:
        create_workflow_in(store, workflow, now)
    store.notify_ready()
    created = to_datetime(now)
    assert created is not None
    return created


def create_workflow_in(store: Store, workflow: NewWorkflow, now: float) -> None:
    """Store the workflow and its first steps inside the current write transaction (a
    schedule's fire calls it too). Raises before writing anything when its id is taken."""
    if store.conn.execute(_q()["get_state"], (workflow.id,)).fetchone() is not None:
        raise TaskIdConflictError(f"workflow {workflow.id!r} already exists")
    store._insert(workflow.first, now, owner=None, infos=False)
    store.conn.execute(
        _q()["insert_workflow"],
        (workflow.id, WorkflowState.PENDING.value, now, workflow.retention_s),
    )
    store.conn.execute(_q()["insert_graph"], (workflow.id, workflow.graph))
    first = {step[1] for m in workflow.first if (step := parse_step_task_id(m.id))}
    store.conn.executemany(
        _q()["insert_step"],
        [
            (workflow.id, i, (StepState.ENQUEUED if i in first else StepState.WAITING).value)
            for i in range(workflow.steps)
        ],
    )


def _cancel(store: Store, workflow_id: str) -> bool:
    with store.write() as now:
        rec = _load(store, workflow_id, results=False)
        if rec is None:
            raise WorkflowNotFoundError(workflow_id)
        change = engine.cancel(rec)
        if change is None:
            return False
        write_change(store, rec, change, now)
    store.notify_ready()
    return True


def _purge(store: Store) -> int:
    with store.write() as now:
        old = [r[0] for r in store.conn.execute(_q()["expired_workflows"], (now,)).fetchall()]
        for workflow_id in old:
            store.conn.execute(_q()["delete_steps"], (workflow_id,))
            store.conn.execute(_q()["delete_workflow"], (workflow_id,))
            store.conn.execute(_q()["delete_graph"], (workflow_id,))
    return len(old)


def _list(store: Store, state: WorkflowState | None, offset: int, limit: int) -> list[str]:
    if state is None:
        found = store.conn.execute(_q()["list_all"], (limit, offset))
    else:
        found = store.conn.execute(_q()["list_in_state"], (state.value, limit, offset))
    return [r[0] for r in found.fetchall()]


class SqliteWorkflows:
    """The workflow half of :class:`~conveyor.brokers.sqlite.SqliteBroker` (a mixin)."""

    if TYPE_CHECKING:  # provided by SqliteBroker
        _closed: bool

        async def _run(self, operation: Callable[[Store], T]) -> T: ...
        def _chained(self, token: int) -> bool: ...
        async def _run_at_once(
            self, at_once: Callable[[Store], T], operation: Callable[[Store], T]
        ) -> T: ...
        def _register_waiter(
            self,
        ) -> contextlib.AbstractContextManager[asyncio.Future[None]]: ...

    async def create_workflow(self, workflow: NewWorkflow) -> datetime:
        """Store the workflow and enqueue its first steps in one transaction; return when."""
        return await self._run(lambda s: _create(s, workflow))

    async def load_workflow(self, workflow_id: str) -> WorkflowRecord:
        """The stored workflow, results included."""

        def load(store: Store) -> WorkflowRecord | None:
            with store.read():
                return _load(store, workflow_id)

        rec = await self._run(load)
        if rec is None:
            raise WorkflowNotFoundError(workflow_id)
        return rec

    async def load_step(self, workflow_id: str, index: int) -> WorkflowRecord:
        """The workflow with the results one step reads before it runs: read with the step's
        claim (by this broker), else together with the steps' reads that arrive while one is
        being made (one call on the database thread)."""
        kept = self._claimed_inputs.pop((workflow_id, index), None)
        if kept is not None:
            return kept
        return await self._step_readers.get()((workflow_id, index))

    def _keep_inputs(self, inputs: list[tuple[_Step, WorkflowRecord]]) -> None:
        """Keep the inputs read with a claim for the steps' ``load_step``, once each."""
        kept = self._claimed_inputs
        if len(kept) + len(inputs) > _INPUTS_KEPT:
            kept.clear()  # claimed steps that never started: their inputs are read again
        kept.update(inputs)

    @functools.cached_property
    def _claimed_inputs(self) -> dict[_Step, WorkflowRecord]:
        return {}

    @functools.cached_property
    def _step_readers(self) -> PerLoop[Combiner[tuple[str, int], WorkflowRecord]]:
        async def run(items: Sequence[tuple[str, int]]) -> list[WorkflowRecord | Exception]:
            return await self._run(lambda s: _load_steps(s, items))

        return PerLoop(lambda: Combiner(run))

    async def list_workflows(
        self, state: WorkflowState | None, *, offset: int = 0, limit: int = 50
    ) -> list[WorkflowRecord]:
        """A page of workflows, newest first."""

        def page(store: Store) -> list[WorkflowRecord]:
            with store.read():
                ids = _list(store, state, max(offset, 0), max(limit, 0))
                return [r for i in ids if (r := _load(store, i)) is not None]

        return await self._run(page)

    async def settle_step(self, lease: Lease, outcome: StepOutcome) -> bool | Continuation:
        """Complete or archive the step's task and advance its workflow, in one transaction
        (shared with the settlements that arrive while one is being written).

        A chain's step continued from its parent is settled alone, at once when it can be
        (:meth:`SqliteBroker._run_at_once`): nothing else of its chain can share the
        transaction. (Chord members settled one at a time instead of together would cost more
        transactions: they go through the combiner.)"""
        if self._chained(lease.token):
            items = [(lease, outcome)]
            [settled] = await self._run_at_once(
                lambda s: settle_many(s, items, wait=False), lambda s: settle_many(s, items)
            )
            if isinstance(settled, Exception):
                raise settled
            return settled
        return await self._settle_combiners.get()((lease, outcome))

    @functools.cached_property
    def _settle_combiners(
        self,
    ) -> PerLoop[Combiner[tuple[Lease, StepOutcome], bool | Continuation]]:
        async def run(
            items: Sequence[tuple[Lease, StepOutcome]],
        ) -> list[bool | Continuation | Exception]:
            return await self._run(lambda s: settle_many(s, items))

        return PerLoop(lambda: Combiner(run))

    async def cancel_workflow(self, workflow_id: str) -> bool:
        """Cancel a workflow not yet finished."""
        return await self._run(lambda s: _cancel(s, workflow_id))

    async def purge_workflows(self) -> int:
        """Delete finished workflows past their retention."""
        return await self._run(_purge)

    async def wait_workflow(self, workflow_id: str, timeout_s: float) -> WorkflowState:
        """Wait until the workflow finished or ``timeout_s`` passed, woken by commits here and
        in other processes (and re-reading its state every 50 ms in case a wake-up is lost)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            with self._register_waiter() as future:
                state = await self._run(lambda s: _state(s, workflow_id))
                remaining = deadline - loop.time()
                if state in FINISHED or remaining <= 0:
                    return state
                await asyncio.wait([future], timeout=min(remaining, _RECHECK_S))
