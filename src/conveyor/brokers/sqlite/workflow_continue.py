"""Eager continuation on SQLite: the chain's next step leased inside its parent's settlement.

Called in the settlement's transaction once the step's dependents are stored PENDING: the first
one that may continue (:func:`~conveyor.brokers.workflow_engine.continuation`) is made ACTIVE
under a fresh fencing token, as a claim would make it (its info built from its message, as it
was just stored from it, not read back), when its queue is not paused and no rate
or concurrency limit names its type or queue (those stay with the claim, which keeps their
counts). Anything else leaves the step PENDING for any worker to claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.sqlite.queries import queries
from conveyor.brokers.workflows import Continuation, StepOutcome, parse_step_task_id
from conveyor.message import Lease, TaskInfo, TaskMessage, TaskState, to_datetime

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.workflow_settle import Settling

__all__ = ["lease_next"]

_CHAINED_KEPT = 4096


def lease_next(
    txn: Settling,
    graph_data: bytes,
    index: int,
    ready: Sequence[TaskMessage],
    outcome: StepOutcome,
) -> Continuation | None:
    """Lease the first continuable step of ``ready`` (made ready by step ``index``'s success)
    to the settling worker, inside the settlement's transaction; ``None`` when none may be."""
    steps = (step[1] for m in ready if (step := parse_step_task_id(m.id)) is not None)
    spec = engine.continuation(engine.parse_graph(graph_data), steps, index, outcome.continue_on)
    if spec is None:
        return None
    m, conn, q = spec.message, txn.store.conn, queries()
    if txn.refuses(m.queue, m.type):
        return None
    token = conn.execute(q["mint_tokens"], (1,)).fetchone()[0]
    expires = txn.now + outcome.continue_lease_s
    # Stored from ``m`` by this transaction a moment ago: its info is the message's, ACTIVE.
    args = (token, expires, txn.now, m.queue, m.id)
    if conn.execute(q["claim_pending_by_id"], args).rowcount != 1:
        return None
    if len(txn.store.chained) >= _CHAINED_KEPT:  # leases lost, never settled here
        txn.store.chained.clear()
    txn.store.chained.add(token)
    enqueued = to_datetime(txn.now)
    info = TaskInfo.from_message(
        m, state=TaskState.ACTIVE, enqueued_at=enqueued, next_process_at=None
    )
    return Continuation(
        lease=Lease(task=info, token=token, expires_at=expires),
        parent_result=engine.continued_input(spec, outcome.result),
        prepend=spec.prepend,
    )
