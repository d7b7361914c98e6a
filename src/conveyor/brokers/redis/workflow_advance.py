"""The common success of a workflow step on standalone Redis: one script, no read before it.

``wf_advance.lua`` checks the lease, completes the task, records the result, enqueues the
dependents whose inputs have all succeeded and finishes the workflow when every step has. What
the script needs from the graph (the dependents, the ranges of steps each waits for, which steps
are error callbacks) is worked out once per graph and step, then reused: a chord's thousand
members share one plan for their body.

It also leases the chain's next step to the settling worker when asked (an eager continuation,
see :mod:`conveyor.brokers.workflows`): the client picks the dependent that may continue (on a
queue the worker serves, due now, its input the step's result, its type under no rate or
concurrency limit as this object last read them, as a claim reads them), and the script leases
it instead of storing it pending when it becomes ready and its queue is neither paused nor under
a concurrency limit.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.redis.base import ScriptBatch
from conveyor.brokers.redis.records import message_args
from conveyor.brokers.redis.replies import claimed_leases
from conveyor.brokers.workflows import Continuation, StepOutcome, parse_step_task_id
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


@functools.lru_cache(maxsize=64)
def _limited(rate_spec: str, concurrency_spec: str) -> frozenset[str]:
    """The task types named by a rate limit spec ("type count period ...") or a concurrency
    limit spec ("type n ...")."""
    rates, limits = rate_spec.split(), concurrency_spec.split()
    return frozenset(rates[0::3]) | frozenset(limits[0::2])


class RedisWorkflowAdvance:
    """The fast success path of :class:`~conveyor.brokers.redis.workflows.RedisWorkflows`."""

    if TYPE_CHECKING:  # provided by RedisBrokerBase and RedisWorkflows
        _ns: str
        _rate_spec: str
        _concurrency_spec: str

        async def _refresh_rates(self) -> None: ...
        async def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any: ...
        async def _graph(self, workflow_id: str) -> bytes | None: ...
        def _workflow_tail(self, workflow_id: str) -> list[str]: ...

    async def _advance(self, lease: Lease, outcome: StepOutcome) -> bool | Continuation | None:
        """The common success in one script with no read first (``wf_advance.lua``); ``None``
        when it is not the common case and the general path must decide; the leased next step
        when ``outcome.continue_on`` asked for it and the script granted it."""
        result = outcome.result
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
        continued = await self._continuable(dependents, step[1], outcome)
        cont_arg = ""
        if continued is not None:
            cont_arg = f"{continued + 1} {round(outcome.continue_lease_s * 1_000_000)}"
        args: list[Any] = [
            lease.task.id,
            str(lease.token),
            result,
            step[1],
            mask,
            deps,
            json.dumps(meta, separators=(",", ":")),
            cont_arg,
            *(d.message.payload for d in dependents),
        ]
        tail = self._workflow_tail(step[0])
        reply = await self._run("wf_advance", [*batch.keys, *tail], args)
        if reply[0] == b"slow":
            return None
        if reply[0] in (b"conflict", b"duplicate"):
            raise TaskIdConflictError(f"a workflow step conflicts with a stored task: {reply!r}")
        if reply[0] != 1:
            return False
        if len(reply) < 3 or continued is None:
            return True
        leases = claimed_leases(batch.queues, [0, reply[1], [], reply[2]])
        if not leases:  # undecodable (never, for a message just stored): left to recovery
            return True
        spec = dependents[continued]
        return Continuation(
            lease=leases[0],
            parent_result=engine.continued_input(spec, result),
            prepend=spec.prepend,
        )

    async def _continuable(
        self, dependents: Sequence[engine.StepSpec], index: int, outcome: StepOutcome
    ) -> int | None:
        """The position of the first dependent that may continue eagerly, or ``None``."""
        if not outcome.continue_on:
            return None
        await self._refresh_rates()
        limited = _limited(self._rate_spec, self._concurrency_spec)
        for k, d in enumerate(dependents):
            if d.message.type not in limited and engine.continuable(d, index, outcome.continue_on):
                return k
        return None
