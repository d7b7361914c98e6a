"""Eager continuation to a sibling on SQLite: a chord's next member leased by a member's settlement.

A step's success that asked for a continuation (``StepOutcome.continue_on``) and made nothing
ready to continue with (a chord's or a group's member) is handed the next pending member of its
own workflow on its queue, leased in the settlement's transaction exactly as a claim would lease
it: the worker runs it in the same slot with no claim of its own and nothing to read first (a
member takes no input). Only what a claim of that queue would hand over next is taken, in the
claim's order (ready time, then enqueue order): the oldest PENDING tasks of the queue, while
they are steps of the same workflow that take no input (not its body, not an error callback),
ENQUEUED in a live workflow, due before any SCHEDULED or RETRY task that came due, on a queue
that is not paused and that no rate or concurrency limit names (nor their types). Anything else
is left to the claim. A worker that dies after the settlement holds the member like a claimed
one: its lease lapses and recovery puts it back.

Members settled together ask together: the queue's head is read once for all of them, their
fencing tokens minted in one statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.sqlite import rows
from conveyor.brokers.sqlite.queries import queries
from conveyor.brokers.sqlite.workflow_advance import LIVE
from conveyor.brokers.sqlite.workflow_reads import workflow_queries
from conveyor.brokers.workflows import Continuation, StepState, parse_step_task_id
from conveyor.message import Lease, TaskInfo, TaskState

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.workflow_settle import Settling

__all__ = ["Wanted", "lease_siblings"]


class Wanted(NamedTuple):
    """A settled step asking for a sibling: its place in the batch, its workflow, its queue
    and the lease to take."""

    position: int
    workflow_id: str
    queue: str
    lease_s: float


def lease_siblings(txn: Settling, wanted: Sequence[Wanted]) -> dict[int, Continuation]:
    """Lease pending members to the settlements in ``wanted`` (by position in the batch), in
    the order asked, as far as there are members a claim would hand over next."""
    groups: dict[tuple[str, str], list[Wanted]] = {}
    for w in wanted:
        groups.setdefault((w.workflow_id, w.queue), []).append(w)
    leased: dict[int, Continuation] = {}
    for (workflow_id, queue), asking in groups.items():
        found = _next_members(txn, workflow_id, queue, len(asking))
        if not found:
            continue
        conn, now = txn.store.conn, txn.now
        last = conn.execute(queries()["mint_tokens"], (len(found),)).fetchone()[0]
        claimed = []
        for token, w, (seq, info, prepend) in zip(
            range(last - len(found) + 1, last + 1), asking, found, strict=False
        ):
            expires = now + w.lease_s
            claimed.append((token, expires, now, seq))
            lease = Lease(task=info, token=token, expires_at=expires)
            leased[w.position] = Continuation(lease=lease, parent_result=None, prepend=prepend)
        conn.executemany(queries()["claim_task"], claimed)
    return leased


def _next_members(
    txn: Settling, workflow_id: str, queue: str, wanted: int
) -> list[tuple[int, TaskInfo, bool]]:
    """Up to ``wanted`` of the queue's next tasks, while they are members of the workflow a
    claim would hand over: (seq, info, whether its function takes its input first)."""
    head = txn.head(workflow_id)
    if head is None or head[0] not in LIVE:
        return []
    conn, q = txn.store.conn, queries()
    try:
        pending = conn.execute(q["claim_pending"], (queue, wanted)).fetchall()
        due = conn.execute(q["claim_due"], (queue, txn.now, 1)).fetchone()
    except sqlite3.OperationalError as exc:
        if rows.is_not_utf8(exc):
            return []  # a row a claim must archive first: left to the claim
        raise
    graph = engine.parse_graph(head[1])
    found: list[tuple[int, TaskInfo, bool]] = []
    for row in pending:
        if row[rows.STATE] != TaskState.PENDING.value:
            break
        if due is not None and (due[rows.READY_AT], due[rows.SEQ]) < (
            row[rows.READY_AT],
            row[rows.SEQ],
        ):
            break  # a task that came due is older: the claim takes it first
        step = parse_step_task_id(row[rows.ID])
        if step is None or step[0] != workflow_id or step[1] >= len(graph.steps):
            break
        spec = graph.steps[step[1]]
        if spec.trigger is not None or spec.input is not None or txn.refuses(queue, row[rows.TYPE]):
            break
        state = conn.execute(workflow_queries()["get_step_state"], (workflow_id, step[1]))
        if state.fetchone() != (StepState.ENQUEUED.value,):
            break
        try:
            info = rows.task_info(row, leased=True)
        except rows.UndecodableRowError:
            break  # the claim archives it
        found.append((row[rows.SEQ], info, spec.prepend))
    return found
