"""Eager continuation on SQLite: the chain's next step leased inside its parent's settlement.

Called in the settlement's transaction once the step's dependents are stored PENDING: the first
one that may continue (:func:`~conveyor.brokers.workflow_engine.continuation`) is made ACTIVE
under a fresh fencing token, as a claim would make it, when its queue is not paused and no rate
or concurrency limit names its type or queue (those stay with the claim, which keeps their
counts). Anything else leaves the step PENDING for any worker to claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.sqlite import rows
from conveyor.brokers.sqlite.queries import queries
from conveyor.brokers.workflows import Continuation, StepOutcome, parse_step_task_id
from conveyor.message import Lease, TaskMessage, TaskState

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.workflow_settle import Settling

__all__ = ["lease_next"]


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
    row = conn.execute(q["get_task"], (m.queue, m.id)).fetchone()
    if row is None or row[rows.STATE] != TaskState.PENDING.value:
        return None
    token = conn.execute(q["mint_tokens"], (1,)).fetchone()[0]
    expires = txn.now + outcome.continue_lease_s
    conn.execute(q["claim_task"], (token, expires, txn.now, row[rows.SEQ]))
    info = rows.task_info(row, leased=True)
    return Continuation(
        lease=Lease(task=info, token=token, expires_at=expires),
        parent_result=engine.continued_input(spec, outcome.result),
        prepend=spec.prepend,
    )
