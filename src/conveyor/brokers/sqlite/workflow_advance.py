"""The common success of a workflow step on SQLite, written without reading the whole workflow.

A step of a running workflow that succeeds records its result, enqueues each dependent whose
inputs have all succeeded, and finishes the workflow when every step has: the rule of
:func:`~conveyor.brokers.workflow_engine.settle` for that case, which reads and compares every
step's record. Here it reads only the rows it needs (the step's own, each dependent's, and its
inputs as index ranges, which a chord body's thousand inputs make one), so a chord member's
settlement costs the same whatever the chord's size. Anything else (a failure, a step re-run in
a failed workflow, a cancelled one, an error callback) goes through the engine.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, NamedTuple

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.workflows import StepState, WorkflowState
from conveyor.message import TaskMessage

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.store import Store

__all__ = ["LIVE", "Advanced", "advance", "graph_of"]

LIVE = (WorkflowState.PENDING.value, WorkflowState.RUNNING.value)
"""The states (stored values) of a workflow whose steps may still advance it."""


# Graphs never change once stored: the ones used lately are kept parsed, by workflow id and
# creation time (a purged workflow's id stored again is another graph), so a chord member's
# read moves a few small rows, not a graph of a thousand steps.
_GRAPHS: dict[tuple[str, float], tuple[bytes, engine.Graph]] = {}
_GRAPHS_KEPT = 256


def graph_of(store: Store, q: dict[str, str], workflow_id: str) -> tuple[str, bytes] | None:
    """The workflow's state and its graph (JSON), or ``None`` when there is no such workflow."""
    head = store.conn.execute(q["get_head"], (workflow_id,)).fetchone()
    if head is None:
        return None
    key = (workflow_id, head[1])
    found = _GRAPHS.get(key)
    if found is None:
        row = store.conn.execute(q["get_graph"], (workflow_id,)).fetchone()
        if len(_GRAPHS) >= _GRAPHS_KEPT:
            _GRAPHS.clear()
        found = _GRAPHS[key] = (row[0], engine.parse_graph(row[0]))
    return head[0], found[0]


_Dependent = tuple[int, TaskMessage, list[tuple[int, int]]]  # index, message, input ranges


@functools.lru_cache(maxsize=1024)
def _dependent(graph_data: bytes, index: int) -> _Dependent:
    """Step ``index`` as a dependent: its message and the ranges of its inputs (once per
    graph: a chord's thousand members share their body's)."""
    spec = engine.parse_graph(graph_data).steps[index]
    return index, spec.message, engine.index_ranges(spec.deps)


@functools.lru_cache(maxsize=256)
def _errbacks(graph_data: bytes) -> str:
    """The JSON list of the graph's error callbacks' indices (without making its steps)."""
    return json.dumps(list(engine.parse_graph(graph_data).error_callbacks))


def _plan(graph_data: bytes, index: int) -> tuple[list[_Dependent], str] | None:
    """For step ``index``: its dependents and the JSON list of the graph's error callbacks;
    ``None`` for an error callback (not the common case)."""
    graph = engine.parse_graph(graph_data)
    if index >= len(graph.steps) or graph.steps[index].trigger is not None:
        return None
    dependents = [
        _dependent(graph_data, j)
        for j in graph.steps[index].dependents
        if graph.steps[j].trigger is None
    ]
    return dependents, _errbacks(graph_data)


class Advanced(NamedTuple):
    """What a step's common success did: the messages of the dependents it made ready (the
    caller enqueues them with the step's completion), whether it finished the workflow, and
    the workflow's graph (JSON). The caller writes the workflow's row (state RUNNING, or
    SUCCEEDED when finished, one more change)."""

    ready: list[TaskMessage]
    finished: bool
    graph: bytes


def advance(
    store: Store, q: dict[str, str], graph: bytes, workflow_id: str, index: int, result: bytes
) -> Advanced | None:
    """Record step ``index``'s success inside the current transaction (see :class:`Advanced`),
    its workflow being live with ``graph``; ``None``, writing nothing, when it is not the
    common case."""
    conn = store.conn
    plan = _plan(graph, index)
    if plan is None:
        return None
    # Written only over ENQUEUED: a step already settled, or failed, takes the engine's path.
    args = (result, workflow_id, index)
    if conn.execute(q["succeed_enqueued_step"], args).rowcount != 1:
        return None
    dependents, errbacks = plan
    ready: list[TaskMessage] = []
    for j, message, inputs in dependents:
        if len(inputs) == 1:  # checked and marked in one statement
            first, last = inputs[0]
            check = (workflow_id, j, first, last)
            if conn.execute(q["enqueue_if_ready"], check).rowcount == 1:
                ready.append(message)
            continue
        state = conn.execute(q["get_step_state"], (workflow_id, j)).fetchone()
        if state is None or state[0] != StepState.WAITING.value:
            continue
        if any(
            conn.execute(q["unsucceeded_in_range"], (workflow_id, a, b)).fetchone()
            for a, b in inputs
        ):
            continue
        conn.execute(q["set_step_state"], (StepState.ENQUEUED.value, workflow_id, j))
        ready.append(message)
    # A step with dependents leaves them enqueued or waiting: the workflow is not done yet.
    done = (
        not dependents
        and conn.execute(q["unsucceeded_main"], (workflow_id, errbacks)).fetchone() is None
    )
    return Advanced(ready, done, graph)
