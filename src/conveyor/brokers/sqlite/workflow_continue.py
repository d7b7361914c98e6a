"""Eager continuation on SQLite: the chain's next step leased inside its parent's settlement.

Called in the settlement's transaction: the first of the step's dependents made ready that may
continue (:func:`~conveyor.brokers.workflow_engine.continuation`) gets a fresh fencing token and
is stored ACTIVE under it, as a claim would leave it (its info built from its message, not read
back), when its queue is not paused and no rate or concurrency limit names its type or queue
(those stay with the claim, which keeps their counts). Anything else is stored PENDING for any
worker to claim. In the common case (:func:`plan_next`) the step is chosen before it is stored,
so it is inserted ACTIVE; after the engine's path it was stored PENDING, and :func:`lease_next`
claims it by id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.sqlite.queries import queries
from conveyor.brokers.workflows import Continuation, StepOutcome, parse_step_task_id
from conveyor.message import Lease, TaskInfo, TaskMessage, TaskState, to_datetime

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.store import Leased
    from conveyor.brokers.sqlite.workflow_settle import Settling

__all__ = ["Planned", "handed", "lease_next", "plan_next"]

_CHAINED_KEPT = 4096


class Planned(NamedTuple):
    """The step a settlement will lease to its worker, chosen before it is stored: it is then
    stored ACTIVE under ``token`` (see :data:`~.store.Leased`), with no claim to run after."""

    spec: engine.StepSpec
    token: int
    expires: float

    def leased(self) -> Leased:
        """How the settlement stores it."""
        m = self.spec.message
        return (m.id, m.queue, self.token, self.expires)


def plan_next(
    txn: Settling,
    graph_data: bytes,
    index: int,
    ready: Sequence[TaskMessage],
    outcome: StepOutcome,
) -> Planned | None:
    """The first continuable step of ``ready`` (made ready by step ``index``'s success, not yet
    stored) with its fencing token minted; ``None`` when none may be leased to the caller."""
    if not (outcome.continue_on and ready):
        return None
    steps = (step[1] for m in ready if (step := parse_step_task_id(m.id)) is not None)
    spec = engine.continuation(engine.parse_graph(graph_data), steps, index, outcome.continue_on)
    if spec is None or txn.refuses(spec.message.queue, spec.message.type):
        return None
    token = txn.store.conn.execute(queries()["mint_tokens"], (1,)).fetchone()[0]
    return Planned(spec, token, txn.now + outcome.continue_lease_s)


def handed(txn: Settling, planned: Planned, outcome: StepOutcome) -> Continuation:
    """The continuation of a planned step, stored ACTIVE under its lease by this transaction."""
    m, chained = planned.spec.message, txn.store.chained
    if len(chained) >= _CHAINED_KEPT:  # leases lost, never settled here
        chained.clear()
    chained.add(planned.token)
    # Stored from ``m`` by this transaction a moment ago: its info is the message's, ACTIVE.
    enqueued = to_datetime(txn.now)
    info = TaskInfo.from_message(
        m, state=TaskState.ACTIVE, enqueued_at=enqueued, next_process_at=None
    )
    return Continuation(
        lease=Lease(task=info, token=planned.token, expires_at=planned.expires),
        parent_result=engine.continued_input(planned.spec, outcome.result),
        prepend=planned.spec.prepend,
    )


def lease_next(
    txn: Settling,
    graph_data: bytes,
    index: int,
    ready: Sequence[TaskMessage],
    outcome: StepOutcome,
) -> Continuation | None:
    """Lease the first continuable step of ``ready`` (made ready by step ``index``'s success,
    and stored PENDING) to the settling worker, inside the settlement's transaction; ``None``
    when none may be."""
    planned = plan_next(txn, graph_data, index, ready, outcome)
    if planned is None:
        return None
    m = planned.spec.message
    args = (planned.token, planned.expires, txn.now, m.queue, m.id)
    if txn.store.conn.execute(queries()["claim_pending_by_id"], args).rowcount != 1:
        return None
    return handed(txn, planned, outcome)
