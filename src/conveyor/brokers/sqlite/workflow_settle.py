"""Settling workflow steps on SQLite: the settlements that arrive together, in one transaction.

Steps finishing together in one worker share a ``BEGIN IMMEDIATE`` transaction (one commit),
each still all or nothing on its own. They are first applied together without a savepoint
each, reading each workflow's head once and writing each workflow's row once (the members of
a chord settled together advance it by their number of changes in one UPDATE). Should one of
them hit an error (a successor's id or unique key taken, a lease lost under it), the whole
transaction is rolled back and the batch applied again, each settlement under a savepoint of
its own, so that one gets its error and the others are committed as if it had not been there.

A settlement asking for an eager continuation (``StepOutcome.continue_on``) gets the chain's
next step (:func:`~.workflow_continue.plan_next`) or, when it made nothing ready that it may
continue with, the next pending member of its own workflow on its queue
(:func:`~.workflow_siblings.lease_siblings`): leased in the same transaction, as a claim would.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.sqlite import limits
from conveyor.brokers.sqlite import store as store_module  # its Store imports this module
from conveyor.brokers.sqlite.queries import queries
from conveyor.brokers.sqlite.workflow_advance import LIVE, advance, graph_of
from conveyor.brokers.sqlite.workflow_continue import Planned, handed, lease_next, plan_next
from conveyor.brokers.sqlite.workflow_reads import load_record, workflow_queries
from conveyor.brokers.sqlite.workflow_siblings import Wanted, lease_siblings
from conveyor.brokers.workflows import (
    Continuation,
    StepOutcome,
    WorkflowRecord,
    WorkflowState,
    parse_step_task_id,
)
from conveyor.errors import DuplicateTaskError, LeaseLostError, TaskIdConflictError
from conveyor.message import Completion, Lease, TaskMessage

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.store import Store

__all__ = ["Settling", "settle_many", "write_change"]

Settled = bool | Continuation | Exception
"""One settlement's outcome: applied (``True``, or the step leased with it), ``False`` for a
lost lease, or the error that refused it."""

_REFUSALS = (TaskIdConflictError, DuplicateTaskError, LeaseLostError)


class _Redo(Exception):
    """A settlement of a batch applied together was refused: apply them one by one."""


class Settling:
    """What one settlement transaction reads once and writes once: each workflow's head (state
    and graph), the workflows' rows advanced by the common case, the claim limits and pauses
    consulted by eager continuations."""

    def __init__(self, store: Store, now: float) -> None:
        self.store = store
        self.now = now
        self._heads: dict[str, tuple[str, bytes] | None] = {}
        # workflow id -> [state before, state now, changes, finished at]
        self._advanced: dict[str, list[Any]] = {}
        self._limits: frozenset[tuple[str, str]] | None = None
        self._paused: dict[str, bool] = {}

    def head(self, workflow_id: str) -> tuple[str, bytes] | None:
        """The workflow's state (as this transaction left it) and graph; ``None``: no such."""
        if workflow_id not in self._heads:
            self._heads[workflow_id] = graph_of(self.store, workflow_queries(), workflow_id)
        return self._heads[workflow_id]

    def advanced(self, workflow_id: str, graph: bytes, finished: bool) -> None:
        """Note a common success of one of the workflow's steps (written by :meth:`flush`)."""
        state = WorkflowState.SUCCEEDED if finished else WorkflowState.RUNNING
        found = self._advanced.get(workflow_id)
        if found is None:
            head = self._heads.get(workflow_id)
            was = None if head is None else head[0]
            self._advanced[workflow_id] = [was, state, 1, self.now if finished else None]
        else:
            found[1], found[2] = state, found[2] + 1
            found[3] = found[3] if found[3] is not None else (self.now if finished else None)
        self._heads[workflow_id] = (state.value, graph)

    def flush(self) -> None:
        """Write the workflows' rows advanced so far, and forget the heads read (a change by
        the engine may follow, which reads and writes the rows itself)."""
        if self._advanced:
            q = workflow_queries()
            moved, counted = [], []
            for wid, (was, state, n, finished) in self._advanced.items():
                if state.value == was:  # RUNNING still: its state's index entry is left alone
                    counted.append((wid, n))
                else:
                    moved.append((wid, state.value, finished, n))
            if moved:
                self.store.conn.executemany(q["advance_workflow"], moved)
            if counted:
                self.store.conn.executemany(q["count_changes"], counted)
            self._advanced.clear()
        self._heads.clear()

    def forget(self) -> None:
        """Drop what was read and noted (its savepoint was rolled back)."""
        self._heads.clear()
        self._advanced.clear()

    def refuses(self, queue: str, task_type: str) -> bool:
        """Whether a claim could not hand over a task of ``task_type`` on ``queue`` as is:
        the queue is paused, or a rate or concurrency limit names the type or the queue (those
        stay with the claim, which keeps their counts)."""
        if self._limits is None:  # every limit, and whether this queue is paused: one read
            found = self.store.conn.execute(workflow_queries()["claim_limits"], (queue,))
            self._limits = frozenset((r[0], r[1]) for r in found.fetchall())
            self._paused[queue] = ("paused", queue) in self._limits
        if self._limits and (
            ("queue", queue) in self._limits
            or ("type", task_type) in self._limits
            or ("rate", task_type) in self._limits
        ):
            return True
        if queue not in self._paused:
            row = self.store.conn.execute(queries()["queue_paused"], (queue,)).fetchone()
            self._paused[queue] = row is not None and bool(row[0])
        return self._paused[queue]

    def no_concurrency_limit(self) -> bool:
        """Whether no concurrency limit is set, as read by :meth:`refuses` (``False`` when it
        did not run: unknown)."""
        return self._limits is not None and not any(
            kind in ("type", "queue") for kind, _ in self._limits
        )


def write_change(store: Store, old: WorkflowRecord, change: engine.Change, now: float) -> None:
    """Write a change decided by the engine over the record it was decided on."""
    rec = change.record
    finished = None if change.reopened else (now if change.finished else _finished_s(old))
    q = workflow_queries()
    store.conn.execute(
        q["update_workflow"],
        (rec.state.value, rec.error, rec.failed_task, finished, rec.version, rec.id),
    )
    store.conn.executemany(
        q["update_step"],
        [
            (new.state.value, new.result, new.error, rec.id, i)
            for i, (before, new) in enumerate(zip(old.steps, rec.steps, strict=True))
            if before != new
        ],
    )


def _finished_s(rec: WorkflowRecord) -> float | None:
    return None if rec.finished_at is None else rec.finished_at.timestamp()


def change_for(
    store: Store, task_id: str, outcome: StepOutcome
) -> tuple[WorkflowRecord, engine.Graph, engine.Change] | None:
    """The engine's change for step ``task_id`` ending with ``outcome`` (``None``: none)."""
    step = parse_step_task_id(task_id)
    rec = None if step is None else load_record(store, step[0], results=False)
    if step is None or rec is None or step[1] >= len(rec.steps):
        return None
    graph = engine.parse_graph(rec.graph)
    change = engine.settle(graph, rec, step[1], outcome)
    return None if change is None else (rec, graph, change)


def _complete(
    txn: Settling,
    found: tuple[int, int, float],
    lease: Lease,
    result: bytes,
    successors: Sequence[TaskMessage],
    exact: bool,
    planned: Planned | None = None,
) -> None:
    """Complete a step's task and store its successors (the row ``found`` by its lease), the
    ``planned`` one ACTIVE under its lease."""
    store, now = txn.store, txn.now
    seq, has_unique_key, retention_s = found
    q = queries()
    if has_unique_key:
        store.conn.execute(q["release_task_lock"], (seq,))
    # Stored while the completing task still exists, so a successor reusing its id conflicts.
    leased = None if planned is None else planned.leased()
    if successors and exact:
        owner = (lease.task.queue, lease.task.id)
        store._insert(successors, now, owner=owner, infos=False, leased=leased)
    elif successors:
        try:
            store._insert_fast(successors, now, infos=False, leased=leased)
        except (store_module._Conflict, sqlite3.IntegrityError):
            raise _Redo from None
    store._completed(seq, result, retention_s, now)


def _settle_one(
    txn: Settling, lease: Lease, outcome: StepOutcome, exact: bool
) -> tuple[bool | Continuation, bool]:
    """One step's settlement inside the transaction (the caller counts it in the day's
    totals): whether it was applied (``False`` for a lost lease; the next step when it was
    leased to the caller, an eager continuation), and whether waiters must be woken after the
    commit (it enqueued steps nobody holds, finished its workflow, or ended a task someone
    waits on)."""
    store, now, task = txn.store, txn.now, lease.task
    found = store.conn.execute(
        queries()["find_leased"], (task.queue, task.id, lease.token)
    ).fetchone()
    if found is None:
        return False, False
    step = parse_step_task_id(task.id)
    if outcome.succeeded and step is not None:
        head = txn.head(step[0])
        adv = None
        if head is not None and head[0] in LIVE:
            adv = advance(store, workflow_queries(), head[1], step[0], step[1], outcome.result)
        if adv is not None:  # the common case, written without reading the whole workflow
            txn.advanced(step[0], adv.graph, adv.finished)
            planned = plan_next(txn, adv.graph, step[1], adv.ready, outcome)
            _complete(txn, found, lease, outcome.result, adv.ready, exact, planned)
            settled = True if planned is None else handed(txn, planned, outcome)
            unheld = len(adv.ready) - (planned is not None)
            return settled, unheld > 0 or adv.finished or store._waited(task)
    txn.flush()  # the engine reads the workflow's row as it stands
    changed = change_for(store, task.id, outcome)
    messages = () if changed is None else tuple(changed[2].messages(changed[1]))
    if outcome.succeeded:
        completion = Completion(lease=lease, result=outcome.result, successors=messages)
        store._complete_one(completion, now)
    else:
        args = (outcome.error, now, task.queue, task.id, lease.token)
        if store.conn.execute(queries()["archive_leased"], args).rowcount != 1:
            raise LeaseLostError(task_id=task.id, queue=task.queue)
        store._insert(messages, now, owner=None, infos=False)
    if changed is not None:
        write_change(store, changed[0], changed[2], now)
        if step is not None and outcome.succeeded:
            continued = lease_next(txn, changed[0].graph, step[1], messages, outcome)
            return continued or True, True
    return True, True


def _apply(
    txn: Settling, items: Sequence[tuple[Lease, StepOutcome]], exact: bool
) -> tuple[list[Settled], bool]:
    """Apply the settlements in the current transaction: their outcomes, and whether to wake
    waiters after the commit. Together (``exact`` false: a refusal raises :class:`_Redo`) or
    each under a savepoint of its own."""
    store = txn.store
    outcomes: list[Settled] = []
    wake = False
    for lease, outcome in items:
        if exact:
            store.conn.execute("SAVEPOINT settle")
        try:
            applied, woken = _settle_one(txn, lease, outcome, exact)
            if exact:
                txn.flush()  # inside its savepoint: a later refusal must not undo it
        except _REFUSALS as exc:
            if not exact:
                raise _Redo from exc
            store.conn.execute("ROLLBACK TO settle")
            store.conn.execute("RELEASE settle")
            txn.forget()  # what it read and noted is undone too
            outcomes.append(exc)
            continue
        if exact:
            store.conn.execute("RELEASE settle")
        outcomes.append(applied)
        wake = wake or woken
    txn.flush()
    _lease_siblings(txn, items, outcomes)
    return outcomes, wake


def _lease_siblings(
    txn: Settling, items: Sequence[tuple[Lease, StepOutcome]], outcomes: list[Settled]
) -> None:
    """Give each applied success that asked for a continuation and got none the next pending
    member of its workflow on its queue, when there is one a claim would hand over."""
    wanted = []
    for i, ((lease, outcome), applied) in enumerate(zip(items, outcomes, strict=True)):
        if applied is not True or not outcome.succeeded or not outcome.continue_on:
            continue
        step = parse_step_task_id(lease.task.id)
        if step is not None and lease.task.queue in outcome.continue_on:
            wanted.append(Wanted(i, step[0], lease.task.queue, outcome.continue_lease_s))
    if wanted:
        for i, continued in lease_siblings(txn, wanted).items():
            outcomes[i] = continued


def settle_many(
    store: Store, items: Sequence[tuple[Lease, StepOutcome]], *, wait: bool = True
) -> list[Settled]:
    """Several settlements in one transaction (one commit, one fsync), each all or nothing on
    its own: steps finishing together in one worker share the commit, as its plain
    completions do. Waiters (idle workers, ``wait_workflow``) are woken only when one of them
    made work ready that it does not hold or finished its workflow: a chord's members mostly
    do neither, and a chain's step hands its successor to its own worker.

    Raises:
        LockBusy: ``wait`` is false and the write lock was held elsewhere; nothing was applied.
    """
    try:
        return _settle(store, items, exact=False, wait=wait)
    except _Redo:
        return _settle(store, items, exact=True, wait=wait)


def _settle(
    store: Store, items: Sequence[tuple[Lease, StepOutcome]], *, exact: bool, wait: bool
) -> list[Settled]:
    with store.write(wait=wait) as now:
        txn = Settling(store, now)
        outcomes, wake = _apply(txn, items, exact)
        counts: Counter[tuple[str, bool]] = Counter()  # the day's and minute's totals, once
        for (lease, outcome), applied in zip(items, outcomes, strict=True):
            if applied is not False and not isinstance(applied, Exception):
                counts[(lease.task.queue, not outcome.succeeded)] += 1
        store._count(counts, now)
        # A freed slot under a concurrency limit may let another task start.
        if not wake and not txn.no_concurrency_limit():
            wake = limits.slots_watched(store.conn, {lease.task.queue for lease, _ in items})
    if wake:
        store.notify_ready()
    return outcomes
