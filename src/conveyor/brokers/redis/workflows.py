"""Workflows on Redis: read, decide in Python, write by compare-and-set in one Lua script.

A step's settlement reads the workflow (record and steps, one MULTI snapshot), computes the
change with :mod:`~conveyor.brokers.workflow_engine`, and runs ``wf_settle.lua``, which checks
the lease and the workflow's ``version`` and then, in one script, completes (or archives) the
task, stores the steps made ready and writes the change. Two chord members finishing at once
both read version v; the first script writes v + 1, the second finds v gone ("stale"), writes
nothing, and its client reads again: the body is enqueued by exactly one of them.

Lease recovery archives tasks in ``recover.lua``, which knows nothing of workflows; a recovered
step's workflow is failed by :meth:`RedisWorkflows.recover_expired` right after, from the
archived task (idempotent, so a recoverer dying in between leaves it to the next pass).

Redis Cluster is not supported: a workflow's keys share one slot (its id's hash tag), but its
steps' queues live in their own slots, and one script must touch both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.redis import keys
from conveyor.brokers.redis.base import ScriptBatch
from conveyor.brokers.redis.records import message_args
from conveyor.brokers.workflows import (
    NewWorkflow,
    StepOutcome,
    StepRecord,
    StepState,
    WorkflowRecord,
    WorkflowState,
    parse_step_task_id,
)
from conveyor.errors import ConfigError, TaskIdConflictError, WorkflowNotFoundError
from conveyor.message import Lease, TaskMessage

if TYPE_CHECKING:
    from conveyor.brokers.redis.base import Client

__all__ = ["RedisWorkflows"]

_STALE = b"stale"


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _str(value: object) -> str:
    """A name from a reply (bytes; str when the client decodes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(
    workflow_id: str, raw: dict[bytes, bytes], steps_raw: dict[bytes, bytes]
) -> WorkflowRecord:
    graph = raw[b"graph"]
    count = len(engine.parse_graph(graph).steps)
    steps = tuple(
        StepRecord(
            state=StepState(steps_raw.get(f"s:{i}".encode(), b"waiting").decode()),
            result=steps_raw.get(f"r:{i}".encode()),
            error=_text(steps_raw.get(f"e:{i}".encode())),
        )
        for i in range(count)
    )
    finished = raw.get(b"finished_at")
    return WorkflowRecord(
        id=workflow_id,
        graph=graph,
        state=WorkflowState(raw[b"state"].decode()),
        steps=steps,
        created_at=datetime.fromtimestamp(int(raw[b"created_at"]) / 1e6, UTC),
        finished_at=None if finished is None else datetime.fromtimestamp(int(finished) / 1e6, UTC),
        error=_text(raw.get(b"error")),
        failed_task=_text(raw.get(b"failed_task")),
        retention_s=float(raw[b"retention"]),
        version=int(raw[b"version"]),
    )


def _change_json(old: WorkflowRecord, change: engine.Change, index: int | None) -> str:
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
        steps.append([i, after.state.value, field])
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


class RedisWorkflows:
    """The workflow half of :class:`~conveyor.brokers.redis.RedisBroker` (a mixin)."""

    if TYPE_CHECKING:  # provided by RedisBrokerBase
        _ns: str
        _cluster: bool
        _client: Client

        async def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any: ...

    def _no_cluster(self) -> None:
        if self._cluster:
            raise ConfigError("workflows are not supported on Redis Cluster")

    def _workflow_tail(self, workflow_id: str) -> list[str]:
        record, steps, wake = keys.workflow_keys(self._ns, workflow_id)
        _, live, expiry = keys.workflow_index(self._ns)
        return [record, steps, wake, live, expiry, keys.registry(self._ns)]

    async def create_workflow(self, workflow: NewWorkflow) -> None:
        """Store the workflow and enqueue its first steps in one script."""
        self._no_cluster()
        batch = ScriptBatch(self)  # type: ignore[arg-type]
        meta = [message_args(m, batch.block(m.queue)) for m in workflow.first]
        record, steps, _ = keys.workflow_keys(self._ns, workflow.id)
        index, live, _ = keys.workflow_index(self._ns)
        first = [s[1] for m in workflow.first if (s := parse_step_task_id(m.id))]
        args: list[Any] = [
            workflow.id,
            workflow.graph,
            repr(workflow.retention_s),
            workflow.steps,
            json.dumps(first),
            json.dumps(meta, separators=(",", ":")),
            *(m.payload for m in workflow.first),
        ]
        tail = [record, steps, index, live, keys.registry(self._ns)]
        reply = await self._run("wf_create", [*batch.keys, *tail], args)
        if reply[0] != b"ok":
            raise TaskIdConflictError(f"workflow {workflow.id!r} cannot be stored: {reply!r}")

    async def _read(self, workflow_id: str) -> WorkflowRecord | None:
        record, steps, _ = keys.workflow_keys(self._ns, workflow_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(record)
            pipe.hgetall(steps)
            raw, steps_raw = await pipe.execute()
        return _record(workflow_id, raw, steps_raw) if raw else None

    async def load_workflow(self, workflow_id: str) -> WorkflowRecord:
        """The stored workflow, results included."""
        self._no_cluster()
        rec = await self._read(workflow_id)
        if rec is None:
            raise WorkflowNotFoundError(workflow_id)
        return rec

    async def list_workflows(
        self, state: WorkflowState | None, *, offset: int = 0, limit: int = 50
    ) -> list[WorkflowRecord]:
        """A page of workflows, newest first (a state filter reads every id's state)."""
        self._no_cluster()
        index, _, _ = keys.workflow_index(self._ns)
        ids = [_str(i) for i in await self._client.zrevrange(index, 0, -1)]
        if state is not None:
            async with self._client.pipeline(transaction=False) as pipe:
                for workflow_id in ids:
                    pipe.hget(keys.workflow_keys(self._ns, workflow_id)[0], "state")
                states = await pipe.execute()
            ids = [i for i, s in zip(ids, states, strict=True) if s == state.value.encode()]
        chosen = ids[max(offset, 0) : max(offset, 0) + max(limit, 0)]
        found = [await self._read(i) for i in chosen]
        return [r for r in found if r is not None]

    async def settle_step(self, lease: Lease, outcome: StepOutcome) -> bool:
        """Complete or archive the step's task and advance its workflow (compare-and-set)."""
        self._no_cluster()
        mode = "success" if outcome.succeeded else "failure"
        value = outcome.result if outcome.succeeded else outcome.error.encode()
        return await self._settle(
            lease.task.queue, lease.task.id, str(lease.token), mode, outcome, value
        )

    async def _settle(
        self, queue: str, task_id: str, token: str, mode: str, outcome: StepOutcome, value: bytes
    ) -> bool:
        step = parse_step_task_id(task_id)
        while True:
            rec = None if step is None else await self._read(step[0])
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
            "" if change is None or rec is None else _change_json(rec, change, index),
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
        self._no_cluster()
        while True:
            rec = await self._read(workflow_id)
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

    async def fail_archived_steps(self) -> None:
        """Fail the workflows of steps archived by recovery (run after ``recover_expired``)."""
        if self._cluster:
            return
        _, live, _ = keys.workflow_index(self._ns)
        for raw_id in await self._client.smembers(live):
            rec = await self._read(_str(raw_id))
            if rec is None:
                continue
            graph = engine.parse_graph(rec.graph)
            waiting = [
                s for s, step in zip(graph.steps, rec.steps, strict=True)
                if step.state is StepState.ENQUEUED
            ]  # fmt: skip
            if not waiting:
                continue
            async with self._client.pipeline(transaction=False) as pipe:
                for spec in waiting:
                    pipe.hmget(
                        keys.task(self._ns, spec.message.queue, spec.message.id), "state", "error"
                    )
                found = await pipe.execute()
            for spec, (state, error) in zip(waiting, found, strict=True):
                if state == b"archived":
                    text = (error or b"archived").decode(errors="replace")
                    outcome = StepOutcome(succeeded=False, error=text)
                    await self._settle(
                        spec.message.queue, spec.message.id, "", "archived", outcome, text.encode()
                    )

    async def purge_workflows(self) -> int:
        """Delete finished workflows past their retention."""
        self._no_cluster()
        index, _, expiry = keys.workflow_index(self._ns)
        seconds, micros = await self._client.time()
        now_us = int(seconds) * 1_000_000 + int(micros)
        old = [_str(i) for i in await self._client.zrangebyscore(expiry, "-inf", now_us)]
        for workflow_id in old:
            record, steps, wake = keys.workflow_keys(self._ns, workflow_id)
            await self._client.delete(record, steps, wake)
            await self._client.zrem(expiry, workflow_id)
            await self._client.zrem(index, workflow_id)
        return len(old)

    async def wait_workflow(self, workflow_id: str, timeout_s: float) -> None:
        """Block on the workflow's wake list (pushed by every change) up to ``timeout_s``."""
        self._no_cluster()
        _, _, wake = keys.workflow_keys(self._ns, workflow_id)
        await self._client.blpop([wake], timeout=max(timeout_s, 0.01))
