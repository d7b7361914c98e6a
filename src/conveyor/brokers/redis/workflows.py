"""Workflows on Redis: the common success decided on the server, the rest by compare-and-set.

A step's success in a running workflow is one script, ``wf_advance.lua``, with no read before
it: it checks the lease, completes the task, records the result, enqueues the dependents whose
inputs have all succeeded and finishes the workflow when every step has (the members of a chord
settled together share one run, each with its own reply). Two chord members finishing at once
are handled one after the other, in one run or two: only the second sees every member
succeeded, so the body is enqueued once.

Every other transition (a failure, a re-run step's success, an error callback, a cancel) reads
the workflow (its record, steps' states included, in one HMGET; the graph, which never changes,
once per broker object), computes the change with :mod:`~conveyor.brokers.workflow_engine`, and
runs ``wf_settle.lua``, which checks the lease and the workflow's ``version`` and then, in one
script, settles the task, stores the steps made ready and writes the change; a version that
moved meanwhile writes nothing, and the client reads again.

Lease recovery that archives a step does it in ``wf_settle.lua`` (mode ``expired``), with the
workflow's failure, before ``recover.lua`` handles the other lapsed tasks
(:meth:`RedisWorkflows.archive_expired_steps`).

On Redis Cluster a workflow's keys share one slot (its id's hash tag) but its steps' queues
live in their own, so no script can touch both: there each transition is one script in the
workflow's slot that puts the steps it made ready into an outbox, drained into their queues
next (:mod:`~conveyor.brokers.redis.workflow_outbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.protocol import LEASE_EXPIRED_ERROR, crash_limit_error
from conveyor.brokers.redis import keys
from conveyor.brokers.redis.base import ScriptBatch, raise_if_cancelled
from conveyor.brokers.redis.records import from_us, message_args
from conveyor.brokers.redis.workflow_advance import RedisWorkflowAdvance
from conveyor.brokers.redis.workflow_load import RedisWorkflowLoad, parse_read, queue_read
from conveyor.brokers.redis.workflow_outbox import RedisWorkflowOutbox, change_json
from conveyor.brokers.workflows import (
    FINISHED,
    Continuation,
    NewWorkflow,
    StepOutcome,
    WorkflowRecord,
    WorkflowState,
    parse_step_task_id,
)
from conveyor.errors import TaskIdConflictError, WorkflowNotFoundError
from conveyor.message import Lease, TaskMessage

if TYPE_CHECKING:
    from conveyor.brokers.redis.base import Client

__all__ = ["RedisWorkflows"]

_STALE = b"stale"


def _str(value: object) -> str:
    """A name from a reply (bytes; str when the client decodes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


# Graphs never change once stored: each broker object keeps the ones it used lately, so a step's
# read moves its own few fields, not a graph of thousands of steps.
_GRAPHS_KEPT = 256


class _KeyedLocks:
    """One asyncio lock per key, dropped when its last holder leaves."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class RedisWorkflows(RedisWorkflowLoad, RedisWorkflowAdvance, RedisWorkflowOutbox):
    """The workflow half of :class:`~conveyor.brokers.redis.RedisBroker` (a mixin)."""

    @functools.cached_property
    def _workflow_locks(self) -> _KeyedLocks:
        return _KeyedLocks()

    @functools.cached_property
    def _graph_cache(self) -> dict[str, bytes]:
        return {}

    if TYPE_CHECKING:  # provided by RedisBrokerBase
        _ns: str
        _cluster: bool
        _client: Client

        async def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any: ...
        async def _all_queues(self) -> list[str]: ...

    def _workflow_tail(self, workflow_id: str) -> list[str]:
        record, steps, wake = keys.workflow_keys(self._ns, workflow_id)
        _, live, expiry = keys.workflow_index(self._ns)
        return [record, steps, wake, live, expiry, keys.registry(self._ns)]

    async def create_workflow(self, workflow: NewWorkflow) -> datetime | None:
        """Store the workflow and enqueue its first steps in one script; return when."""
        if self._cluster:
            return await self._create_outboxed(workflow)
        batch = ScriptBatch(self)  # type: ignore[arg-type]
        meta = [message_args(m, batch.block(m.queue)) for m in workflow.first]
        record, steps, _ = keys.workflow_keys(self._ns, workflow.id)
        index, live, _ = keys.workflow_index(self._ns)
        first = {s[1] for m in workflow.first if (s := parse_step_task_id(m.id))}
        letters = "".join("q" if i in first else "w" for i in range(workflow.steps))
        args: list[Any] = [
            workflow.id,
            workflow.graph,
            repr(workflow.retention_s),
            letters,
            json.dumps(meta, separators=(",", ":")),
            *(m.payload for m in workflow.first),
        ]
        tail = [record, steps, index, live, keys.registry(self._ns)]
        reply = await self._run("wf_create", [*batch.keys, *tail], args)
        if reply[0] != b"ok":
            raise TaskIdConflictError(f"workflow {workflow.id!r} cannot be stored: {reply!r}")
        return from_us(reply[1])

    async def _graph(self, workflow_id: str) -> bytes | None:
        _graphs = self._graph_cache
        found = _graphs.get(workflow_id)
        if found is None:
            raw = await self._client.hget(keys.workflow_keys(self._ns, workflow_id)[0], "graph")
            found = raw.encode() if isinstance(raw, str) else raw
            if found is not None:
                if len(_graphs) >= _GRAPHS_KEPT:
                    _graphs.clear()
                _graphs[workflow_id] = found
        return found

    async def _read(
        self, workflow_id: str, *, steps: Sequence[int] | None = None, results: bool = True
    ) -> WorkflowRecord | None:
        """The workflow with the records of ``steps`` (every step for ``None``).

        Without ``results`` only the record is read, the steps' states with it in one HMGET
        (enough to advance it, and one consistent read). Results are read by a second command
        in the same round trip: a step's result never changes once it succeeded.
        """
        graph = await self._graph(workflow_id)
        if graph is None:
            return None
        chosen: Sequence[int] = ()
        if results:
            chosen = range(len(engine.parse_graph(graph).steps)) if steps is None else steps
        async with self._client.pipeline(transaction=False) as pipe:
            queue_read(pipe, self._ns, workflow_id, chosen)
            replies = await pipe.execute()
        return parse_read(workflow_id, graph, chosen, replies)

    async def load_workflow(self, workflow_id: str) -> WorkflowRecord:
        """The stored workflow, results included."""
        rec = await self._read(workflow_id)
        if rec is None:
            raise WorkflowNotFoundError(workflow_id)
        return rec

    async def list_workflows(
        self, state: WorkflowState | None, *, offset: int = 0, limit: int = 50
    ) -> list[WorkflowRecord]:
        """A page of workflows, newest first (a state filter reads every id's state)."""
        index, _, _ = keys.workflow_index(self._ns)
        ids = [_str(i) for i in reversed(await self._client.zrange(index, 0, -1))]
        if state is not None:
            async with self._client.pipeline(transaction=False) as pipe:
                for workflow_id in ids:
                    pipe.hget(keys.workflow_keys(self._ns, workflow_id)[0], "state")
                states = await pipe.execute()
            ids = [i for i, s in zip(ids, states, strict=True) if s == state.value.encode()]
        chosen = ids[max(offset, 0) : max(offset, 0) + max(limit, 0)]
        found = [await self._read(i) for i in chosen]
        return [r for r in found if r is not None]

    async def settle_step(self, lease: Lease, outcome: StepOutcome) -> bool | Continuation:
        """Complete or archive the step's task and advance its workflow (compare-and-set).

        An eager continuation is granted on the common success path of a standalone server
        only (``wf_advance.lua``); Redis Cluster, whose steps' queues live in other slots than
        their workflow, never continues eagerly."""
        if self._cluster:
            return await self._settle_outboxed(lease, outcome)
        if outcome.succeeded:
            fast = await self._advance(lease, outcome)
            if fast is not None:
                return fast
        mode = "success" if outcome.succeeded else "failure"
        value = outcome.result if outcome.succeeded else outcome.error.encode()
        return await self._settle(
            lease.task.queue, lease.task.id, str(lease.token), mode, outcome, value
        )

    async def _settle(
        self, queue: str, task_id: str, token: str, mode: str, outcome: StepOutcome, value: bytes
    ) -> bool:
        step = parse_step_task_id(task_id)
        if step is None:
            return await self._settle_once(queue, task_id, token, mode, outcome, value, step)
        # Steps of one workflow settled by this process go one at a time: a compare-and-set
        # retry costs a round trip and a full read, and a chord's members finish together.
        async with self._workflow_locks.hold(step[0]):
            return await self._settle_once(queue, task_id, token, mode, outcome, value, step)

    async def _settle_once(
        self,
        queue: str,
        task_id: str,
        token: str,
        mode: str,
        outcome: StepOutcome,
        value: bytes,
        step: tuple[str, int] | None,
    ) -> bool:
        while True:
            rec = None if step is None else await self._read(step[0], results=False)
            change = None
            if rec is not None and step is not None and step[1] < len(rec.steps):
                graph = engine.parse_graph(rec.graph)
                change = engine.settle(graph, rec, step[1], outcome)
            messages: list[TaskMessage] = [] if change is None else change.messages(graph)
            reply = await self._write(
                queue, task_id, token, mode, value, rec, change, messages, step
            )
            if reply != _STALE:
                return bool(reply == 1)

    async def _write(
        self,
        queue: str,
        task_id: str,
        token: str,
        mode: str,
        value: bytes,
        rec: WorkflowRecord | None,
        change: engine.Change | None,
        messages: list[TaskMessage],
        step: tuple[str, int] | None,
    ) -> Any:
        index = None if step is None else step[1]
        batch = ScriptBatch(self)  # type: ignore[arg-type]
        batch.block(queue)
        meta = [message_args(m, batch.block(m.queue)) for m in messages]
        args: list[Any] = [
            mode,
            task_id,
            token,
            value,
            "" if rec is None else str(rec.version),
            "" if change is None or rec is None else change_json(rec, change, index),
            json.dumps(meta, separators=(",", ":")),
            *(m.payload for m in messages),
        ]
        workflow_id = "-" if step is None else step[0]
        reply = await self._run("wf_settle", [*batch.keys, *self._workflow_tail(workflow_id)], args)
        if reply and isinstance(reply[0], bytes) and reply[0] in (b"conflict", b"duplicate"):
            raise TaskIdConflictError(f"a workflow step conflicts with a stored task: {reply!r}")
        return reply[0]

    async def cancel_workflow(self, workflow_id: str) -> bool:
        """Cancel a workflow not yet finished (compare-and-set)."""
        if self._cluster:
            return await self._cancel_outboxed(workflow_id)
        while True:
            rec = await self._read(workflow_id, results=False)
            if rec is None:
                raise WorkflowNotFoundError(workflow_id)
            change = engine.cancel(rec)
            if change is None:
                return False
            graph = engine.parse_graph(rec.graph)
            queue = graph.steps[0].message.queue
            reply = await self._write(
                queue, "", "", "cancel", b"", rec, change, [], (workflow_id, -1)
            )
            if reply != _STALE:
                return True

    async def archive_expired_steps(self, max_crashes: int) -> int:
        """Archive the workflow steps that lease recovery is about to archive, each in one
        script with its workflow's failure (``wf_settle.lua``, mode ``expired``).

        Runs before ``recover.lua``, which then finds them gone and handles every other task
        (a step going to RETRY changes nothing in its workflow). Returns how many it archived.
        """
        seconds, micros = await self._client.time()
        now_us = int(seconds) * 1_000_000 + int(micros)
        archived = 0
        for queue in await self._all_queues():
            qkeys = keys.queue_keys(self._ns, queue)
            lapsed = await self._client.zrangebyscore(qkeys.active, "-inf", now_us - 1)
            for task_id in map(_str, lapsed):
                if parse_step_task_id(task_id) is not None:
                    archived += await self._archive_expired(queue, task_id, max_crashes)
        return archived

    async def _archive_expired(self, queue: str, task_id: str, max_crashes: int) -> int:
        fields = ("retried", "max_retry", "crashes")
        raw = await self._client.hmget(keys.task(self._ns, queue, task_id), fields)
        try:
            retried, max_retry, crashes = (int(v or 0) for v in raw)
        except ValueError:
            return 0  # a damaged record: recover.lua archives it as corrupt
        poison = crashes + 1 >= max_crashes
        if not poison and retried + 1 <= max_retry:
            return 0  # goes to RETRY: nothing changes in its workflow
        error = crash_limit_error(max_crashes) if poison else LEASE_EXPIRED_ERROR
        if self._cluster:
            # Recovery archives the task itself next; its workflow's failure goes first.
            await self._fail_expired_outboxed(task_id, error)
            return 0
        token = f"{max_crashes} {'p' if poison else 'r'}"
        outcome = StepOutcome(succeeded=False, error=error)
        done = await self._settle(queue, task_id, token, "expired", outcome, error.encode())
        return int(done)

    async def purge_workflows(self) -> int:
        """Delete finished workflows past their retention."""
        if self._cluster:
            await self._sweep_outboxes()
        index, _, expiry = keys.workflow_index(self._ns)
        seconds, micros = await self._client.time()
        now_us = int(seconds) * 1_000_000 + int(micros)
        old = [_str(i) for i in await self._client.zrangebyscore(expiry, "-inf", now_us)]
        for workflow_id in old:
            record, steps, wake = keys.workflow_keys(self._ns, workflow_id)
            if self._cluster and await self._client.hget(record, "finished_at") is None:
                # Reopened (a failed step re-run) between its filing and now: not expired.
                await self._client.zrem(expiry, workflow_id)
                continue
            outbox = keys.workflow_outbox(self._ns, workflow_id)
            await self._client.delete(record, steps, wake, outbox)
            await self._client.zrem(expiry, workflow_id)
            await self._client.zrem(index, workflow_id)
        return len(old)

    async def wait_workflow(self, workflow_id: str, timeout_s: float) -> WorkflowState:
        """Block on the workflow's wake list (pushed by the change that finishes it) until it
        finished."""
        record, _, wake = keys.workflow_keys(self._ns, workflow_id)
        deadline = time.monotonic() + timeout_s
        while True:
            raw = await self._client.hget(record, "state")
            if raw is None:
                raise WorkflowNotFoundError(workflow_id)
            state = WorkflowState(_str(raw))
            remaining = deadline - time.monotonic()
            if state in FINISHED or remaining <= 0:
                return state
            await self._client.blpop([wake], timeout=max(remaining, 0.01))
            raise_if_cancelled()
