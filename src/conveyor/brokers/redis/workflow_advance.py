"""The common success of workflow steps on standalone Redis: one script, no read before it.

``wf_advance.lua`` checks each step's lease, completes its task, records its result, enqueues
the dependents whose inputs have all succeeded and finishes the workflow when every step has.
What the script needs from the graph (the dependents, the ranges of steps each waits for, which
steps are error callbacks) and the rest the steps with the same dependents send alike (keys,
the dependents' messages) are worked out once per workflow, queue and dependents, then reused:
a chord's thousand members share one plan for their body.

It also leases the chain's next step to the settling worker when asked (an eager continuation,
see :mod:`conveyor.brokers.workflows`): the client picks the dependent that may continue (on a
queue the worker serves, due now, its input the step's result, its type under no rate or
concurrency limit as this object last read them, as a claim reads them), and the script leases
it instead of storing it pending when it becomes ready and its queue is neither paused nor under
a concurrency limit.

Steps a worker finishes together (a chord's members, up to its free slots) are settled in one
round trip: the calls made in the same turn of the event loop, and those that arrive while one
batch is in flight, are gathered (:class:`~conveyor.brokers.combiner.Combiner`) and sent as one
pipeline on the connection the broker keeps
(:meth:`~conveyor.brokers.redis.direct.AsyncLines.call_each`), one ``wf_advance.lua`` run per
group of steps that share their workflow, queue and dependents: the run reads and writes the
workflow's record once for them all. Each step still gets its own reply, as if it had run
alone: a lost lease, a refused dependent (nothing written for that step) or an error concerns
its own caller only. A step asking for an eager continuation runs alone.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.combiner import Combiner, PerLoop
from conveyor.brokers.redis.base import ScriptBatch
from conveyor.brokers.redis.records import message_args
from conveyor.brokers.workflows import Continuation, StepOutcome, parse_step_task_id
from conveyor.errors import TaskIdConflictError
from conveyor.message import Lease, TaskInfo, TaskState, to_datetime

if TYPE_CHECKING:
    from conveyor.brokers.redis.direct import AsyncLines

__all__ = ["RedisWorkflowAdvance"]


@functools.lru_cache(maxsize=256)
def _mask(graph_data: bytes) -> str:
    """One letter per step, m for a step of the workflow and e for an error callback; '' when
    the graph has no error callbacks."""
    graph = engine.parse_graph(graph_data)
    if not graph.error_callbacks:
        return ""
    mask = ["m"] * len(graph.steps)
    for i in graph.error_callbacks:
        mask[i] = "e"
    return "".join(mask)


@functools.lru_cache(maxsize=1024)
def _inputs(graph_data: bytes, index: int) -> list[Any]:
    """Step ``index`` as a dependent: ``[index, ranges of its inputs]`` (once per graph: a
    chord's thousand members share their body's)."""
    return [index, engine.index_ranges(engine.parse_graph(graph_data).steps[index].deps)]


def _dependents(graph_data: bytes, index: int) -> tuple[int, ...] | None:
    """Step ``index``'s dependents; ``None`` when the fast path does not apply (an error
    callback, or no such step)."""
    graph = engine.parse_graph(graph_data)
    if index >= len(graph.steps) or graph.steps[index].trigger is not None:
        return None
    return graph.steps[index].dependents


@functools.lru_cache(maxsize=64)
def _limited(rate_spec: str, concurrency_spec: str) -> frozenset[str]:
    """The task types named by a rate limit spec ("type count period ...") or a concurrency
    limit spec ("type n ...")."""
    rates, limits = rate_spec.split(), concurrency_spec.split()
    return frozenset(rates[0::3]) | frozenset(limits[0::2])


class _Shared(NamedTuple):
    """What the steps of a workflow with the same dependents, settled from the same queue,
    send alike (a chord's members): made once, then reused."""

    keys: list[str]
    head: list[Any]  # ARGV[1..3]: the error-callback mask, the dependents' inputs, messages
    payloads: list[bytes]  # the dependents' payloads
    queues: list[str]  # the KEYS blocks' queues, in order
    dependents: list[engine.StepSpec]


class _Keys(NamedTuple):
    """A run's KEYS (the queues' blocks, then the workflow's keys) and where each dependent's
    queue is among the blocks."""

    keys: list[str]
    indexes: tuple[int, ...]  # each dependent's block (1-based), in order
    queues: list[str]  # the blocks' queues, in order


# Built once: json.dumps with separators makes a new encoder per call (a chain's steps each make
# their plan).
_compact = json.JSONEncoder(separators=(",", ":")).encode

# How many _Shared a broker keeps (a chord needs one; more are made again when dropped).
_SHARED_KEPT = 1024


class _Plan(NamedTuple):
    """One step's part of a ``wf_advance.lua`` run, and what reading its reply needs."""

    shared: _Shared
    cont_arg: str  # ARGV[4]: the eager continuation asked for, or ''
    step: list[Any]  # the step's task id, lease token, result and index
    continued: int | None  # the dependent asked to continue eagerly
    result: bytes
    lease_us: int  # the continuation's lease asked for (µs), 0 for none

    def group(self) -> int | None:
        """What the steps run together share (their _Shared); ``None`` for a step that runs
        alone (an eager continuation asked for)."""
        return None if self.continued is not None else id(self.shared)


def _args(plans: Sequence[_Plan]) -> list[Any]:
    """ARGV of one ``wf_advance.lua`` run settling ``plans`` (one group)."""
    first = plans[0]
    steps = (v for p in plans for v in p.step)
    return [*first.shared.head, first.cont_arg, len(plans), *steps, *first.shared.payloads]


_Advancer = Combiner[_Plan, bool | Continuation | None]


class RedisWorkflowAdvance:
    """The fast success path of :class:`~conveyor.brokers.redis.workflows.RedisWorkflows`."""

    if TYPE_CHECKING:  # provided by RedisBrokerBase and RedisWorkflows
        _ns: str
        _rate_spec: str
        _concurrency_spec: str
        _lines: AsyncLines | None
        _rate_spec_until: float

        @property
        def _graph_cache(self) -> dict[str, bytes]: ...

        async def _run_each(
            self, name: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
        ) -> list[Any]: ...
        async def _refresh_rates(self) -> None: ...
        async def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any: ...
        async def _graph(self, workflow_id: str) -> bytes | None: ...
        def _workflow_tail(self, workflow_id: str) -> list[str]: ...

    async def _advance(self, lease: Lease, outcome: StepOutcome) -> bool | Continuation | None:
        """The common success in one script with no read first (``wf_advance.lua``); ``None``
        when it is not the common case and the general path must decide; the leased next step
        when ``outcome.continue_on`` asked for it and the script granted it.

        On the broker's kept connection, the successes of steps settled at the same time go to
        the server together in one round trip, one script run per workflow (a chord's members
        finishing together), and each caller gets its own reply."""
        plan = await self._advance_plan(lease, outcome)
        if plan is None:
            return None
        if self._lines is None:
            [reply] = await self._run("wf_advance", plan.shared.keys, _args([plan]))
            return _advanced(plan, reply)
        return await self._advancer(plan.continued is None)(plan)

    async def _advance_plan(self, lease: Lease, outcome: StepOutcome) -> _Plan | None:
        """The step's ``wf_advance.lua`` run, or ``None`` when the fast path does not apply."""
        result = outcome.result
        step = parse_step_task_id(lease.task.id)
        if step is None:
            return None
        # The graph is kept once read: no coroutine for the usual look-up.
        graph_data = self._graph_cache.get(step[0]) or await self._graph(step[0])
        if graph_data is None:
            return None
        dependents = _dependents(graph_data, step[1])
        if dependents is None:
            return None
        shared = self._shared_plan(step[0], graph_data, lease.task.queue, dependents)
        continued = await self._continuable(shared.dependents, step[1], outcome)
        cont_arg, lease_us = "", 0
        if continued is not None:
            lease_us = round(outcome.continue_lease_s * 1_000_000)
            cont_arg = f"{continued + 1} {lease_us}"
        step_args = [lease.task.id, str(lease.token), result, step[1]]
        return _Plan(shared, cont_arg, step_args, continued, result, lease_us)

    def _shared_plan(
        self, workflow_id: str, graph_data: bytes, queue: str, dependents: tuple[int, ...]
    ) -> _Shared:
        """The part of a ``wf_advance.lua`` run the steps with these dependents share."""
        kept = self._shared_plans
        key = (workflow_id, queue, dependents)
        found = kept.get(key)
        if found is not None:
            return found
        graph = engine.parse_graph(graph_data)
        specs = [graph.steps[j] for j in dependents]
        blocks = self._script_keys(workflow_id, queue, tuple(d.message.queue for d in specs))
        meta = [message_args(d.message, b) for d, b in zip(specs, blocks.indexes, strict=True)]
        # A dependent waiting for this step alone (a chain's next step) is asked for once: its
        # inputs are written out here, and the plan is not kept.
        alone = all(len(d.deps) == 1 for d in specs)
        inputs = [
            [d.index, [(d.deps[0], d.deps[0])]] if alone else _inputs(graph_data, d.index)
            for d in specs
        ]
        head = [_mask(graph_data), _compact(inputs), _compact(meta)]
        found = _Shared(blocks.keys, head, [d.message.payload for d in specs], blocks.queues, specs)
        if not alone:
            if len(kept) >= _SHARED_KEPT:
                kept.clear()
            kept[key] = found
        return found

    def _script_keys(self, workflow_id: str, queue: str, queues: tuple[str, ...]) -> _Keys:
        """The KEYS of a run settling steps of ``queue`` whose dependents are on ``queues``:
        the same for every step of a chain on one queue, so made once per workflow."""
        kept = self._keys_kept
        key = (workflow_id, queue, queues)
        found = kept.get(key)
        if found is None:
            batch = ScriptBatch(self)  # type: ignore[arg-type]
            batch.block(queue)
            indexes = tuple(batch.block(q) for q in queues)
            tail = self._workflow_tail(workflow_id)
            found = _Keys([*batch.keys, *tail], indexes, batch.queues)
            if len(kept) >= _SHARED_KEPT:
                kept.clear()
            kept[key] = found
        return found

    @functools.cached_property
    def _keys_kept(self) -> dict[tuple[str, str, tuple[str, ...]], _Keys]:
        return {}

    @functools.cached_property
    def _shared_plans(self) -> dict[tuple[str, str, tuple[int, ...]], _Shared]:
        return {}

    @functools.cached_property
    def _advancers(self) -> PerLoop[tuple[_Advancer, _Advancer]]:
        return PerLoop(
            lambda: (
                Combiner(self._advance_many),
                Combiner(self._advance_many, gather_turns=1),
            )
        )

    def _advancer(self, gather: bool) -> _Advancer:
        """The combiner for this event loop (its callers are woken through futures of their
        own loop). With ``gather``, a batch also waits for the end of the current turn, so the
        slots whose handlers returned together share it (a chord's members); without, a lone
        call goes out at once: a chain step asking for its eager continuation, whose worker
        waits on the reply to run the next step."""
        pair = self._advancers.get()
        return pair[1] if gather else pair[0]

    async def _advance_many(
        self, plans: Sequence[_Plan]
    ) -> list[bool | Continuation | Exception | None]:
        """The plans in one round trip: one script run per group of steps that share their
        workflow, queue and dependents (a chord's members), each step's outcome (or error) on
        its own."""
        if len(plans) == 1:  # the usual lone call (a chain step): nothing to group
            [reply] = await self._run_each("wf_advance", [(plans[0].shared.keys, _args(plans))])
            return [_outcome(plans[0], reply[0] if isinstance(reply, list) else reply)]
        groups: dict[tuple[bool, int], list[int]] = {}
        for i, plan in enumerate(plans):
            shared = plan.group()
            groups.setdefault((True, shared) if shared is not None else (False, i), []).append(i)
        runs = [[plans[i] for i in chosen] for chosen in groups.values()]
        calls = [(run[0].shared.keys, _args(run)) for run in runs]
        replies = await self._run_each("wf_advance", calls)
        out: list[bool | Continuation | Exception | None] = [None] * len(plans)
        for chosen, run, reply in zip(groups.values(), runs, replies, strict=True):
            for i, plan, own in zip(
                chosen, run, reply if isinstance(reply, list) else [reply] * len(run), strict=True
            ):
                out[i] = _outcome(plan, own)
        return out

    async def _continuable(
        self, dependents: Sequence[engine.StepSpec], index: int, outcome: StepOutcome
    ) -> int | None:
        """The position of the first dependent that may continue eagerly, or ``None``."""
        if not outcome.continue_on:
            return None
        if time.monotonic() >= self._rate_spec_until:
            await self._refresh_rates()
        limited = _limited(self._rate_spec, self._concurrency_spec)
        for k, d in enumerate(dependents):
            if d.message.type not in limited and engine.continuable(d, index, outcome.continue_on):
                return k
        return None


def _outcome(plan: _Plan, own: Any) -> bool | Continuation | Exception | None:
    """One step's outcome from its reply in a run (an error reply stays its exception)."""
    if isinstance(own, Exception):
        return own
    try:
        return _advanced(plan, own)
    except TaskIdConflictError as exc:
        return exc


def _advanced(plan: _Plan, reply: Any) -> bool | Continuation | None:
    """What ``wf_advance.lua``'s reply means for the caller (see :meth:`~RedisWorkflowAdvance.
    _advance`)."""
    if reply[0] == b"slow":
        return None
    if reply[0] in (b"conflict", b"duplicate"):
        raise TaskIdConflictError(f"a workflow step conflicts with a stored task: {reply!r}")
    if reply[0] != 1:
        return False
    if len(reply) < 3 or plan.continued is None:
        return True
    # The leased step's record is its message as the script stored it, leased at the script's
    # time: its info is made from the message, with nothing read back (as claimed_leases
    # would decode a claim's).
    spec = plan.shared.dependents[plan.continued]
    expiry_us = int(reply[1])
    info = TaskInfo.from_message(
        spec.message,
        state=TaskState.ACTIVE,
        enqueued_at=to_datetime((expiry_us - plan.lease_us) / 1_000_000),
        next_process_at=None,
    )
    return Continuation(
        lease=Lease(task=info, token=int(reply[2]), expires_at=expiry_us / 1_000_000),
        parent_result=engine.continued_input(spec, plan.result),
        prepend=spec.prepend,
    )
