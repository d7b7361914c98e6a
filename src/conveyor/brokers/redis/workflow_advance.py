"""The common success of a workflow step on standalone Redis: one script, no read before it.

``wf_advance.lua`` checks the lease, completes the task, records the result, enqueues the
dependents whose inputs have all succeeded and finishes the workflow when every step has. What
the script needs from the graph (the dependents, the ranges of steps each waits for, which steps
are error callbacks) is worked out once per graph and step, then reused: a chord's thousand
members share one plan for their body.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.redis.base import ScriptBatch
from conveyor.brokers.redis.records import message_args
from conveyor.brokers.workflows import parse_step_task_id
from conveyor.errors import TaskIdConflictError
from conveyor.message import Lease

__all__ = ["RedisWorkflowAdvance"]


@functools.lru_cache(maxsize=256)
def _mask(graph_data: bytes) -> str:
    """One letter per step, m for a step of the workflow and e for an error callback; '' when
    the graph has no error callbacks."""
    steps = engine.parse_graph(graph_data).steps
    if all(s.trigger is None for s in steps):
        return ""
    return "".join("m" if s.trigger is None else "e" for s in steps)


@functools.lru_cache(maxsize=1024)
def _inputs(graph_data: bytes, index: int) -> list[Any]:
    """Step ``index`` as a dependent: ``[index, ranges of its inputs]`` (once per graph: a
    chord's thousand members share their body's)."""
    return [index, engine.index_ranges(engine.parse_graph(graph_data).steps[index].deps)]


def _plan(graph_data: bytes, index: int) -> tuple[str, str, list[engine.StepSpec]] | None:
    """For step ``index``: the error-callback mask, the dependents' JSON (wf_advance.lua's
    ARGV[6]) and the dependents; ``None`` when the fast path does not apply (an error
    callback)."""
    graph = engine.parse_graph(graph_data)
    if index >= len(graph.steps) or graph.steps[index].trigger is not None:
        return None
    dependents = [graph.steps[j] for j in graph.steps[index].dependents]
    deps = json.dumps([_inputs(graph_data, d.index) for d in dependents], separators=(",", ":"))
    return _mask(graph_data), deps, dependents


class RedisWorkflowAdvance:
    """The fast success path of :class:`~conveyor.brokers.redis.workflows.RedisWorkflows`."""

    if TYPE_CHECKING:  # provided by RedisBrokerBase and RedisWorkflows
        _ns: str

        async def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any: ...
        async def _graph(self, workflow_id: str) -> bytes | None: ...
        def _workflow_tail(self, workflow_id: str) -> list[str]: ...

    async def _advance(self, lease: Lease, result: bytes) -> bool | None:
        """The common success in one script with no read first (``wf_advance.lua``); ``None``
        when it is not the common case and the general path must decide."""
        step = parse_step_task_id(lease.task.id)
        graph_data = None if step is None else await self._graph(step[0])
        if step is None or graph_data is None:
            return None
        plan = _plan(graph_data, step[1])
        if plan is None:
            return None
        mask, deps, dependents = plan
        batch = ScriptBatch(self)  # type: ignore[arg-type]
        batch.block(lease.task.queue)
        meta = [message_args(d.message, batch.block(d.message.queue)) for d in dependents]
        args: list[Any] = [
            lease.task.id,
            str(lease.token),
            result,
            step[1],
            mask,
            deps,
            json.dumps(meta, separators=(",", ":")),
            *(d.message.payload for d in dependents),
        ]
        tail = self._workflow_tail(step[0])
        reply = await self._run("wf_advance", [*batch.keys, *tail], args)
        if reply[0] == b"slow":
            return None
        if reply[0] in (b"conflict", b"duplicate"):
            raise TaskIdConflictError(f"a workflow step conflicts with a stored task: {reply!r}")
        return bool(reply[0] == 1)
