"""Workflow reads on SQLite: a workflow's record with the steps' records a caller needs.

A chord's members each read their own record and their inputs' only (the others shown WAITING);
the reads of steps starting together are made in one read transaction (:func:`load_steps`).
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.sqlite.queries import parse_queries
from conveyor.brokers.sqlite.workflow_advance import graph_of
from conveyor.brokers.workflows import (
    StepRecord,
    StepState,
    WorkflowRecord,
    WorkflowState,
    parse_step_task_id,
)
from conveyor.errors import WorkflowNotFoundError
from conveyor.message import Lease, to_datetime

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.store import Store

__all__ = ["Step", "claim_with_inputs", "load_record", "load_steps", "workflow_queries"]


@functools.cache
def workflow_queries() -> dict[str, str]:
    """The named queries of workflows.sql."""
    text = resources.files("conveyor.brokers.sqlite").joinpath("workflows.sql").read_text("utf-8")
    return parse_queries(text)


# One shared record per state for steps read without their result: a chord's thousand members
# cost no allocation each time one of them settles.
_BARE = {state.value: StepRecord(state=state) for state in StepState}


def load_record(
    store: Store,
    workflow_id: str,
    *,
    results: bool | Sequence[int] = True,
    graph: bytes | None = None,
    row: Sequence[Any] | None = None,
) -> WorkflowRecord | None:
    """The workflow; ``results`` True reads every step's result and error, False none (enough
    to advance it), a list of indices those steps' only. A ``graph`` given is not read again,
    nor the workflow's ``row`` (from ``get_workflow_bare``, read in the same transaction)."""
    q = workflow_queries()
    if row is None:
        query = "get_workflow" if graph is None else "get_workflow_bare"
        row = store.conn.execute(q[query], (workflow_id,)).fetchone()
        if row is None:
            return None
    graph = row[2] if graph is None else graph
    if results is True:
        steps = tuple(
            StepRecord(state=StepState(s), result=r, error=e)
            for s, r, e in store.conn.execute(q["get_steps"], (workflow_id,))
        )
    elif results is False:
        found = [_BARE[s] for (s,) in store.conn.execute(q["get_states"], (workflow_id,))]
        steps = tuple(found)
    else:
        # Only the steps asked for are read; the others show WAITING (load_step's contract).
        found = [_BARE[StepState.WAITING.value]] * len(engine.parse_graph(graph).steps)
        read: Iterable[tuple[int, str, bytes | None, str | None]] = ()
        if len(results) == 1:  # a chord member's own record: no JSON list to expand
            read = store.conn.execute(q["get_one_step"], (workflow_id, results[0]))
        elif results:
            read = store.conn.execute(q["get_some_steps"], (workflow_id, json.dumps(list(results))))
        for i, s, r, e in read:
            found[i] = StepRecord(state=StepState(s), result=r, error=e)
        steps = tuple(found)
    created = to_datetime(row[3])
    assert created is not None
    return WorkflowRecord(
        id=row[0],
        state=WorkflowState(row[1]),
        graph=graph,
        steps=steps,
        created_at=created,
        finished_at=to_datetime(row[4]),
        error=row[5],
        failed_task=row[6],
        retention_s=row[7],
        version=row[8],
    )


def load_steps(store: Store, items: Sequence[tuple[str, int]]) -> list[WorkflowRecord | Exception]:
    """What each step (workflow id, index) reads before it runs: its own record and its
    inputs' (the others shown WAITING), in one read transaction. Steps of one workflow (a
    chord's members claimed together) share the read of its head and its row."""
    q = workflow_queries()
    out: list[WorkflowRecord | Exception] = []
    heads: dict[str, tuple[bytes, Sequence[Any]] | None] = {}
    with store.read():
        for workflow_id, index in items:
            if workflow_id not in heads:
                head = graph_of(store, q, workflow_id)
                row = None
                if head is not None:
                    row = store.conn.execute(q["get_workflow_bare"], (workflow_id,)).fetchone()
                heads[workflow_id] = None if head is None or row is None else (head[1], row)
            found = heads[workflow_id]
            rec = None
            if found is not None:
                graph = engine.parse_graph(found[0])
                needed = engine.needed_by(graph, index) if index < len(graph.steps) else True
                rec = load_record(store, workflow_id, results=needed, graph=found[0], row=found[1])
            out.append(WorkflowNotFoundError(workflow_id) if rec is None else rec)
    return out


Step = tuple[str, int]
"""A workflow step: its workflow's id and its index."""


def claim_with_inputs(
    store: Store, queues: Sequence[str], limit: int, lease_s: float
) -> tuple[list[Lease], list[tuple[Step, WorkflowRecord]]]:
    """Claim (one write transaction), then read what the workflow steps claimed read before
    they run (one read transaction, right after the claim: its pages are still cached), in
    one call on the database thread."""
    leases = store.claim(queues, limit, lease_s)
    steps = [step for le in leases if (step := parse_step_task_id(le.task.id)) is not None]
    if not steps:
        return leases, []
    try:
        found = load_steps(store, steps)
    except sqlite3.Error:  # the leases are held now: each step reads its inputs again instead
        return leases, []
    return leases, [
        (step, rec)
        for step, rec in zip(steps, found, strict=True)
        if not isinstance(rec, Exception)
    ]
