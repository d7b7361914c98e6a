"""Workflows on Redis Cluster: each transition in the workflow's slot, its next steps via an outbox.

On Cluster a script may only touch keys of one hash slot. A workflow's keys share its id's hash
tag (``ns:wf:{id}``...), so every change to a workflow is still one atomic script there; its
steps' queues live in their own slots, so no script can both record a step and enqueue the next.
A step's settlement is therefore three ordered broker steps, each safe to repeat:

1. ``wf_outbox_change.lua`` (workflow slot, compare-and-set on the workflow's version): record
   the step's result or error, count down, decide what is ready, and add the ready steps'
   indices to the workflow's *outbox*, all in one script. A step already recorded changes
   nothing (the engine returns no change), so a repeat is a no-op.
2. Drain the outbox: enqueue each step it names with the step's deterministic task id
   (``wf.<workflow>.<index>``), then remove it from the outbox. An id already stored is
   refused (``TaskIdConflictError``) and counted as done, so a repeated drain stores nothing
   twice. If a repeat comes after the step's task completed and was deleted, the task is stored
   again, but the step's record says it succeeded, so the worker settles it without running
   the handler (``StepRunner.prepare``).
3. Complete (or archive) the leased task, fenced by its lease token as any completion.

A crash after (1) and before (3) leaves the task active: its lease lapses, it is redelivered,
the worker finds the step recorded, skips the handler and repeats (2) and (3). A crash before (1)
is an ordinary crash: the step runs again. The periodic sweep (``purge_workflows``) also drains
the outbox of every live workflow and files finished ones into the expiry index (a separate
slot), so a crash inside ``enqueue_workflow`` or after a failure's error callbacks were recorded
leaves nothing behind for longer than one janitor interval.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.redis import keys
from conveyor.brokers.redis.records import from_us
from conveyor.brokers.workflows import (
    FINISHED,
    NewWorkflow,
    StepOutcome,
    StepState,
    WorkflowRecord,
    WorkflowState,
    parse_step_task_id,
)
from conveyor.errors import LeaseLostError, TaskIdConflictError, WorkflowNotFoundError
from conveyor.message import Completion, Lease, TaskInfo, TaskMessage

if TYPE_CHECKING:
    from conveyor.brokers.redis.base import Client
    from conveyor.brokers.redis.workflows import _KeyedLocks

__all__ = ["LETTER", "RedisWorkflowOutbox", "change_json"]

# A step's state as stored: one letter in the record's 'states' field.
LETTER = {
    StepState.WAITING: "w",
    StepState.ENQUEUED: "q",
    StepState.SUCCEEDED: "s",
    StepState.FAILED: "f",
    StepState.CANCELLED: "c",
}


def change_json(old: WorkflowRecord, change: engine.Change, index: int | None) -> str:
    """A change as the workflow scripts read it (see wf_settle.lua's header)."""
    rec = change.record
    steps: list[list[Any]] = []
    for i, (before, after) in enumerate(zip(old.steps, rec.steps, strict=True)):
        if before == after:
            continue
        field = ""
        if i == index and after.state is StepState.SUCCEEDED:
            field = "r"
        elif i == index and after.state is StepState.FAILED:
            field = "e"
        steps.append([i, LETTER[after.state], field])
    finished = 1 if change.finished else -1 if change.reopened else 0
    return json.dumps(
        {
            "id": rec.id,
            "state": rec.state.value,
            "error": rec.error or "",
            "failed_task": rec.failed_task or "",
            "version": rec.version,
            "finished": finished,
            "retention_us": round(rec.retention_s * 1_000_000),
            "steps": steps,
        }
    )


def _int(value: object) -> int:
    return int(value.decode() if isinstance(value, bytes) else str(value))


class RedisWorkflowOutbox:
    """The Redis Cluster half of :class:`~conveyor.brokers.redis.workflows.RedisWorkflows`."""

    if TYPE_CHECKING:  # provided by RedisBrokerBase and RedisWorkflows
        _ns: str
        _client: Client

        @property
        def _workflow_locks(self) -> _KeyedLocks: ...

        async def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any: ...
        async def _graph(self, workflow_id: str) -> bytes | None: ...
        async def _read(
            self, workflow_id: str, *, steps: Sequence[int] | None = None, results: bool = True
        ) -> WorkflowRecord | None: ...
        async def enqueue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]: ...
        async def complete(self, completions: Sequence[Completion]) -> list[bool]: ...
        async def archive(self, lease: Lease, *, error: str) -> None: ...

    def _wf_keys(self, workflow_id: str) -> list[str]:
        record, steps, wake = keys.workflow_keys(self._ns, workflow_id)
        return [record, steps, wake, keys.workflow_outbox(self._ns, workflow_id)]

    async def _create_outboxed(self, workflow: NewWorkflow) -> datetime | None:
        """Store the workflow with its first steps in its outbox, then drain it; return when
        (``None`` for a repeated create, whose reply was lost)."""
        _, live, _ = keys.workflow_index(self._ns)
        # Live first: a create cut short before its drain is then found by the sweep.
        await self._client.sadd(live, workflow.id)
        first = sorted({s[1] for m in workflow.first if (s := parse_step_task_id(m.id))})
        letters = "".join("q" if i in first else "w" for i in range(workflow.steps))
        record, steps, _, outbox = self._wf_keys(workflow.id)
        args = [workflow.graph, repr(workflow.retention_s), letters, json.dumps(first)]
        reply = await self._run("wf_outbox_create", [record, steps, outbox], args)
        if reply[0] == b"exists" and reply[1] != workflow.graph:
            raise TaskIdConflictError(f"workflow id {workflow.id!r} is taken")
        # A repeated create of the same workflow (its reply was lost) finishes the first one.
        await self._drain_outbox(workflow.id)
        await self._file(workflow.id)
        return from_us(reply[1]) if reply[0] == b"ok" else None

    async def _drain_outbox(self, workflow_id: str) -> None:
        """Enqueue the steps in the workflow's outbox (by their task ids), then forget them."""
        outbox = keys.workflow_outbox(self._ns, workflow_id)
        indices = sorted(_int(v) for v in await self._client.smembers(outbox))
        if not indices:
            return
        data = await self._graph(workflow_id)
        if data is None:
            await self._client.delete(outbox)  # purged meanwhile: nothing left to start
            return
        graph = engine.parse_graph(data)
        by_queue: dict[str, list[TaskMessage]] = defaultdict(list)
        for i in indices:
            if i < len(graph.steps):
                message = graph.steps[i].message
                by_queue[message.queue].append(message)
        for messages in by_queue.values():
            try:
                await self.enqueue(messages)  # atomic per queue on Cluster
            except TaskIdConflictError:
                # Some were stored by an earlier drain: store the others one by one.
                for message in messages:
                    with contextlib.suppress(TaskIdConflictError):
                        await self.enqueue([message])
        await self._client.srem(outbox, *(str(i) for i in indices))

    async def _write_change(
        self, rec: WorkflowRecord, change: engine.Change, index: int | None, value: bytes
    ) -> bool:
        """Write ``change`` over ``rec`` (compare-and-set); ``False`` when the workflow moved."""
        ready = json.dumps(change.enqueue)
        args = [str(rec.version), change_json(rec, change, index), value, ready]
        reply = await self._run("wf_outbox_change", self._wf_keys(rec.id), args)
        return bool(reply[0] == 1)

    async def _record_step(self, workflow_id: str, index: int, outcome: StepOutcome) -> bool:
        """Record a step's outcome in its workflow (step 1); ``True`` when the workflow
        finished or reopened (its index entries must follow)."""
        value = outcome.result if outcome.succeeded else outcome.error.encode()
        # One settlement per workflow at a time in this process: a compare-and-set retry costs
        # a round trip and a read, and a chord's members finish together.
        async with self._workflow_locks.hold(workflow_id):
            while True:
                rec = await self._read(workflow_id, results=False)
                if rec is None or index >= len(rec.steps):
                    return False
                change = engine.settle(engine.parse_graph(rec.graph), rec, index, outcome)
                if change is None:
                    return False  # recorded already (a redelivery): nothing to change
                if await self._write_change(rec, change, index, value):
                    return change.finished or change.reopened

    async def _settle_outboxed(self, lease: Lease, outcome: StepOutcome) -> bool:
        """Record the outcome, drain the outbox, then complete or archive the task."""
        step = parse_step_task_id(lease.task.id)
        if step is not None:
            moved = await self._record_step(step[0], step[1], outcome)
            await self._drain_outbox(step[0])
            if moved:
                await self._file(step[0])
        if outcome.succeeded:
            keep = lease.task.retention > timedelta(0)
            result = outcome.result if keep else None
            return (await self.complete([Completion(lease=lease, result=result)]))[0]
        try:
            await self.archive(lease, error=outcome.error)
        except LeaseLostError:
            return False
        return True

    async def _cancel_outboxed(self, workflow_id: str) -> bool:
        async with self._workflow_locks.hold(workflow_id):
            while True:
                rec = await self._read(workflow_id, results=False)
                if rec is None:
                    raise WorkflowNotFoundError(workflow_id)
                change = engine.cancel(rec)
                if change is None:
                    return False
                if await self._write_change(rec, change, None, b""):
                    break
        await self._file(workflow_id)
        return True

    async def _fail_expired_outboxed(self, task_id: str, error: str) -> None:
        """A step that lease recovery is about to archive: fail its workflow first (its error
        callbacks go through the outbox); recovery then archives the task itself."""
        step = parse_step_task_id(task_id)
        if step is None:
            return
        if await self._record_step(step[0], step[1], StepOutcome(succeeded=False, error=error)):
            await self._drain_outbox(step[0])
            await self._file(step[0])
        else:
            await self._drain_outbox(step[0])

    async def _file(self, workflow_id: str) -> None:
        """Bring the index, live set and expiry index (another slot) in line with the record."""
        record = keys.workflow_keys(self._ns, workflow_id)[0]
        index, live, expiry = keys.workflow_index(self._ns)
        fields = ("state", "created_at", "finished_at", "retention")
        state, created, finished, retention = await self._client.hmget(record, fields)
        if state is None:
            return  # a create not yet written, or purged: the sweep decides later
        await self._client.zadd(index, {workflow_id: _int(created)}, nx=True)
        if WorkflowState(_int_str(state)) in FINISHED and finished is not None:
            end = _int(finished) + round(float(_int_str(retention)) * 1_000_000)
            await self._client.zadd(expiry, {workflow_id: end})
            await self._client.srem(live, workflow_id)
        else:
            await self._client.sadd(live, workflow_id)
            await self._client.zrem(expiry, workflow_id)

    async def _sweep_outboxes(self) -> None:
        """Drain every live workflow's outbox and file the finished ones (crash leftovers).

        One pipelined read for all live workflows (each node gets its own share), then work
        only for those with something left behind.
        """
        _, live, _ = keys.workflow_index(self._ns)
        ids = [_int_str(i) for i in await self._client.smembers(live)]
        if not ids:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for workflow_id in ids:
                pipe.exists(keys.workflow_outbox(self._ns, workflow_id))
                pipe.hget(keys.workflow_keys(self._ns, workflow_id)[0], "state")
            replies = await pipe.execute()
        for n, workflow_id in enumerate(ids):
            left, state = replies[2 * n], replies[2 * n + 1]
            if left:
                await self._drain_outbox(workflow_id)
            if state is not None and WorkflowState(_int_str(state)) in FINISHED:
                await self._file(workflow_id)


def _int_str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
