"""What a workflow step reads before it runs, on Redis: its own record and its inputs' results.

On a standalone server (and Sentinel) a claim returns each claimed step's workflow record with
it (``claim.lua``): a step that needs nothing more (no input, not recorded as succeeded: a
chord's member) takes it from there, with no read of its own, once its workflow's graph is at
hand (the first steps of a workflow a worker claims read it together). Other steps read:
steps claimed together (a claim starts up to a worker's free slots at once: a chord's members
come in batches) read together: the reads of the calls made in the same turn of the event
loop (the steps of one claim start together), and of those made while one batch is in flight,
go out as one pipeline, one round trip for the batch
(:class:`~conveyor.brokers.combiner.Combiner`), with two commands per workflow whatever the
number of its steps in the batch (its record, and the steps' results and errors in one
``HMGET``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.combiner import Combiner, PerLoop
from conveyor.brokers.redis import keys
from conveyor.brokers.redis.records import from_us
from conveyor.brokers.redis.replies import claimed_leases
from conveyor.brokers.redis.workflow_outbox import LETTER
from conveyor.brokers.workflows import (
    StepRecord,
    StepState,
    WorkflowRecord,
    WorkflowState,
    parse_step_task_id,
)
from conveyor.errors import WorkflowNotFoundError
from conveyor.message import Lease

if TYPE_CHECKING:
    from conveyor.brokers.redis.base import Client
    from conveyor.brokers.redis.direct import AsyncLines

__all__ = ["RedisWorkflowLoad", "parse_read", "queue_read", "read_commands"]


def _text(value: bytes | str | None) -> str | None:
    return None if value is None else value.decode() if isinstance(value, bytes) else value


_FIELDS = (
    "state", "created_at", "finished_at", "error", "failed_task", "retention", "version", "states"
)  # fmt: skip
_STATE = {ord(v): k for k, v in LETTER.items()}
# One shared record per state for steps read without their result (no allocation per step).
_BARE = {ord(v): StepRecord(state=k) for k, v in LETTER.items()}


@functools.lru_cache(maxsize=64)
def _bare_steps(letters: bytes) -> tuple[StepRecord, ...]:
    """The steps' records for their states' letters (one shared record per letter): made once
    for the members of a chord that read the same letters, not once per member."""
    return tuple(map(_BARE.__getitem__, letters))


def _record(
    workflow_id: str, graph: bytes, raw: list[bytes | None], steps: dict[int, StepRecord]
) -> WorkflowRecord:
    state, created, finished, error, failed_task, retention, version, letters = (
        None if v is None else v if isinstance(v, bytes) else str(v).encode() for v in raw
    )
    assert state is not None and created is not None and retention is not None
    assert letters is not None
    # One shared record per letter, then the few steps read with their results.
    records = _bare_steps(letters)
    if steps:
        changed = list(records)
        for i, found in steps.items():
            changed[i] = found
        records = tuple(changed)
    return WorkflowRecord(
        id=workflow_id,
        graph=graph,
        state=WorkflowState(state.decode()),
        steps=records,
        created_at=from_us(created),
        finished_at=None if finished is None else from_us(finished),
        error=_text(error),
        failed_task=_text(failed_task),
        retention_s=float(retention),
        version=int(version or 0),
    )


def read_commands(ns: str, workflow_id: str, chosen: Sequence[int]) -> list[tuple[Any, ...]]:
    """The reads of a workflow's record (its steps' states with it, in one HMGET) and of the
    results and errors of the steps ``chosen``: two commands, or one."""
    record, steps_key, _ = keys.workflow_keys(ns, workflow_id)
    commands: list[tuple[Any, ...]] = [("HMGET", record, *_FIELDS)]
    if chosen:
        commands.append(("HMGET", steps_key, *[f"{kind}:{i}" for i in chosen for kind in "re"]))
    return commands


def queue_read(pipe: Any, ns: str, workflow_id: str, chosen: Sequence[int]) -> None:
    """Queue :func:`read_commands` on ``pipe``."""
    for command in read_commands(ns, workflow_id, chosen):
        pipe.execute_command(*command)


def parse_read(
    workflow_id: str, graph: bytes, chosen: Sequence[int], replies: list[Any]
) -> WorkflowRecord | None:
    """The record from :func:`queue_read`'s replies (``None``: no such workflow). Results are
    read by the second command: a step's result never changes once it succeeded."""
    raw = replies[0]
    if raw[0] is None:
        return None
    values = replies[1] if chosen else []
    letters = raw[-1] or b""
    found: dict[int, StepRecord] = {}
    for n, i in enumerate(chosen):
        result, error = values[2 * n], values[2 * n + 1]
        if result is not None or error is not None:
            found[i] = StepRecord(state=_STATE[letters[i]], result=result, error=_text(error))
    return _record(workflow_id, graph, raw, found)


_Read = tuple[str, int]  # workflow id, step index


class _Claimed:
    """A workflow's record as a claim read it, and the record made from it (once, for the
    steps of that workflow the claim leased)."""

    __slots__ = ("raw", "record")

    def __init__(self, raw: list[Any]) -> None:
        self.raw = raw
        self.record: WorkflowRecord | None = None


# How many claimed steps' workflow records may wait for their load_step: more are dropped (a
# step whose claim's record was dropped reads its workflow again).
_RECORDS_KEPT = 4096
_SUCCEEDED = ord(LETTER[StepState.SUCCEEDED])


class RedisWorkflowLoad:
    """``load_step`` of :class:`~conveyor.brokers.redis.workflows.RedisWorkflows` (a mixin)."""

    if TYPE_CHECKING:  # provided by RedisBrokerBase and RedisWorkflows
        _ns: str
        _client: Client

        _lines: AsyncLines | None

        @property
        def _graph_cache(self) -> dict[str, bytes]: ...

        async def _graph(self, workflow_id: str) -> bytes | None: ...
        async def load_workflow(self, workflow_id: str) -> WorkflowRecord: ...

    async def _read_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The replies of ``commands`` sent together: on the broker's kept connection where it
        has one (standalone, Sentinel), else as a redis-py pipeline (Cluster)."""
        if self._lines is not None:  # errors reach the caller as a pipeline's would
            return await self._lines.call_many(commands)
        async with self._client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())

    async def load_step(self, workflow_id: str, index: int) -> WorkflowRecord:
        """The workflow with the records one step reads before it runs: from what its claim
        read when that is all it needs (a step with no input: a chord's member), else read
        together with the reads of other steps starting at the same time."""
        claimed = self._claimed_records.pop((workflow_id, index), None)
        if claimed is not None:
            rec = self._record_from_claim(workflow_id, index, claimed)
            if rec is not None:
                return rec
        return await self._step_readers.get()((workflow_id, index))

    def _claimed_leases(self, names: Sequence[str], reply: Any) -> list[Lease]:
        """The leases in a claim.lua reply (see :func:`claimed_leases`); the workflow records
        its workflow steps got with it (standalone: claim.lua) are kept for their
        ``load_step``, once each."""
        kept = self._claimed_records
        shared: dict[str, _Claimed] = {}  # the claim read each workflow's record once
        for entry in reply[3:]:
            if len(entry) > 4 and (step := parse_step_task_id(_text(entry[1]) or "")) is not None:
                if len(kept) >= _RECORDS_KEPT:
                    kept.clear()  # claimed steps that never started: they read theirs again
                if isinstance(entry[4], list):
                    shared[step[0]] = _Claimed(entry[4])
                claimed = shared.get(step[0])  # else: an earlier entry carried the record
                if claimed is not None:
                    kept[step] = claimed
        return claimed_leases(names, reply)

    def _record_from_claim(
        self, workflow_id: str, index: int, claimed: _Claimed
    ) -> WorkflowRecord | None:
        """The workflow as step ``index`` needs it, from its record as the step's claim read
        it; ``None`` when the step needs more (an input, its own recorded result), its graph
        is not at hand yet (the first steps of a workflow read it together), or the record
        is missing."""
        raw = claimed.raw
        graph = self._graph_cache.get(workflow_id)
        letters = raw[-1] if raw else None
        if graph is None or raw[0] is None or not isinstance(letters, bytes):
            return None
        parsed = engine.parse_graph(graph)
        if index >= min(len(parsed.steps), len(letters)) or letters[index] == _SUCCEEDED:
            return None
        if engine.needed_by(parsed, index) != [index]:
            return None
        if claimed.record is None:  # once for the steps of one workflow claimed together
            claimed.record = parse_read(workflow_id, graph, (), [raw])
        return claimed.record

    @functools.cached_property
    def _claimed_records(self) -> dict[_Read, _Claimed]:
        return {}

    @functools.cached_property
    def _step_readers(self) -> PerLoop[Combiner[_Read, WorkflowRecord]]:
        return PerLoop(lambda: Combiner(self._read_steps, gather_turns=1))

    async def _read_steps(self, items: Sequence[_Read]) -> list[WorkflowRecord | Exception]:
        plans: list[tuple[str, bytes, list[int]] | None] = []
        # Per workflow, the steps whose records its items read: a chord's members claimed
        # together read its record once and their own records in one HMGET.
        wanted: dict[str, dict[int, None]] = {}
        for workflow_id, index in items:
            graph = await self._graph(workflow_id)
            parsed = None if graph is None else engine.parse_graph(graph)
            if graph is None or parsed is None or index >= len(parsed.steps):
                plans.append(None)  # read the whole workflow (or find it missing) below
            else:
                needed = engine.needed_by(parsed, index)
                plans.append((workflow_id, graph, needed))
                wanted.setdefault(workflow_id, {}).update(dict.fromkeys(needed))
        read: dict[str, tuple[Any, dict[int, tuple[Any, Any]]]] = {}
        if wanted:
            commands = [
                command
                for workflow_id, steps in wanted.items()
                for command in read_commands(self._ns, workflow_id, list(steps))
            ]
            replies = await self._read_many(commands)
            at = 0
            for workflow_id, steps in wanted.items():
                values = replies[at + 1] if steps else []
                pairs = {i: (values[2 * n], values[2 * n + 1]) for n, i in enumerate(steps)}
                read[workflow_id] = (replies[at], pairs)
                at += 2 if steps else 1
        out: list[WorkflowRecord | Exception] = []
        for (workflow_id, _), plan in zip(items, plans, strict=True):
            if plan is None:
                try:
                    out.append(await self.load_workflow(workflow_id))
                except WorkflowNotFoundError as exc:
                    out.append(exc)
                continue
            raw, pairs = read[workflow_id]
            own = [v for i in plan[2] for v in pairs[i]]
            rec = parse_read(workflow_id, plan[1], plan[2], [raw, own] if plan[2] else [raw])
            out.append(WorkflowNotFoundError(workflow_id) if rec is None else rec)
        return out
