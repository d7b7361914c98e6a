"""Workflow reads on SQLite: a workflow's record with the steps' records a caller needs.

A chord's members each read their own record and their inputs' only (the others shown WAITING);
the reads of steps starting together are made in one read transaction (:func:`load_steps`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.sqlite.queries import parse_queries
from conveyor.brokers.sqlite.workflow_advance import graph_of
from conveyor.brokers.workflows import StepRecord, StepState, WorkflowRecord, WorkflowState
from conveyor.errors import WorkflowNotFoundError
from conveyor.message import to_datetime

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.store import Store

__all__ = ["load_record", "load_steps", "workflow_queries"]


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
) -> WorkflowRecord | None:
    """The workflow; ``results`` True reads every step's result and error, False none (enough
    to advance it), a list of indices those steps' only. A ``graph`` given is not read again."""
    q = workflow_queries()
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
        found = [
            _BARE[s]
            for (s,) in store.conn.execute(workflow_queries()["get_states"], (workflow_id,))
        ]
        steps = tuple(found)
    else:
        # Only the steps asked for are read; the others show WAITING (load_step's contract).
        found = [_BARE[StepState.WAITING.value]] * len(engine.parse_graph(graph).steps)
        if results:
            chosen = json.dumps(list(results))
            for i, s, r, e in store.conn.execute(
                workflow_queries()["get_some_steps"], (workflow_id, chosen)
            ):
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
    inputs' (the others shown WAITING), in one read transaction."""
    out: list[WorkflowRecord | Exception] = []
    with store.read():
        for workflow_id, index in items:
            head = graph_of(store, workflow_queries(), workflow_id)
            rec = None
            if head is not None:
                graph = engine.parse_graph(head[1])
                needed = engine.needed_by(graph, index) if index < len(graph.steps) else True
                rec = load_record(store, workflow_id, results=needed, graph=head[1])
            out.append(WorkflowNotFoundError(workflow_id) if rec is None else rec)
    return out
