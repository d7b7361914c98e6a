"""Workflow steps seen and changed from outside the worker, on Redis.

:meth:`RedisWorkflowSteps.get_tasks` reads every step's task of a workflow in one pipelined round
trip (``Inspector.get_workflow``). The inspector's archive and delete of a step's task fail its
workflow: on a standalone server (and Sentinel) in one script, ``wf_manage.lua``, which archives
or deletes the task and writes the workflow's failure over the version read (compare-and-set),
storing the step's error callbacks; on Cluster the failure is recorded first in the workflow's
slot, its error callbacks go through the outbox, and the task is archived or deleted next, as
lease recovery does (:mod:`~conveyor.brokers.redis.workflow_outbox`).

A state's tasks (``archive_tasks``, ``delete_tasks``) go in batches as before, except that the
batch script (``manage.lua``) leaves workflow steps alone and names them: each is then archived
or deleted this way. A forced ``delete_queue`` deletes the workflow steps among its tasks this
way first, then the queue.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.brokers import workflow_engine as engine
from conveyor.brokers.redis.base import ScriptBatch
from conveyor.brokers.redis.inspection import InspectionMixin
from conveyor.brokers.redis.records import decode_record, message_args
from conveyor.brokers.redis.replies import as_bytes, not_found
from conveyor.brokers.redis.workflow_outbox import change_json
from conveyor.brokers.workflows import StepOutcome, WorkflowRecord, parse_step_task_id
from conveyor.errors import PayloadError, TaskIdConflictError, TaskNotFoundError
from conveyor.message import TaskInfo, TaskMessage, TaskState

if TYPE_CHECKING:
    from conveyor.brokers.redis.workflows import _KeyedLocks

__all__ = ["ARCHIVED_ERROR", "DELETED_ERROR", "RedisWorkflowSteps"]

ARCHIVED_ERROR = "archived by the inspector"
"""A step's error when the inspector archived its task (unless the task had a last error)."""
DELETED_ERROR = "step deleted"
"""A step's error when the inspector deleted its task (or its queue)."""

_APPLIES = {
    "archive": frozenset({TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY}),
    "delete": frozenset(
        {
            TaskState.PENDING,
            TaskState.SCHEDULED,
            TaskState.RETRY,
            TaskState.ARCHIVED,
            TaskState.COMPLETED,
        }
    ),
}
_STALE = b"stale"


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class RedisWorkflowSteps(InspectionMixin):
    """The inspector's view of and operations on workflow steps (a mixin of RedisBroker)."""

    if TYPE_CHECKING:  # provided by RedisWorkflows

        @property
        def _workflow_locks(self) -> _KeyedLocks: ...

        def _workflow_tail(self, workflow_id: str) -> list[str]: ...
        async def _read(
            self, workflow_id: str, *, steps: Sequence[int] | None = None, results: bool = True
        ) -> WorkflowRecord | None: ...
        async def _fail_expired_outboxed(self, task_id: str, error: str) -> None: ...

    async def get_tasks(self, tasks: Sequence[tuple[str, str]]) -> list[TaskInfo | None]:
        """Several tasks by ``(queue, id)`` in one pipelined round trip; ``None`` for one that
        does not exist."""
        if not tasks:
            return []
        with self._errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for queue, task_id in tasks:
                    pipe.hgetall(self._keys(queue).task_prefix + task_id)
                replies = await pipe.execute()
        found: list[TaskInfo | None] = []
        for (queue, task_id), reply in zip(tasks, replies, strict=True):
            fields = {as_bytes(k): as_bytes(v) for k, v in reply.items()}
            try:
                found.append(decode_record(queue, task_id, fields) if fields else None)
            except PayloadError:
                found.append(None)
        return found

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Move a PENDING, SCHEDULED or RETRY task to ARCHIVED; a workflow step's workflow
        fails with it."""
        if parse_step_task_id(task_id) is None:
            await super().archive_task(queue, task_id)
        else:
            await self._manage_step("archive", queue, task_id)

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not ACTIVE; a workflow step's workflow fails with it."""
        if parse_step_task_id(task_id) is None:
            await super().delete_task(queue, task_id)
        else:
            await self._manage_step("delete", queue, task_id)

    async def archive_tasks(self, queue: str, state: TaskState) -> int:
        """Archive every task in a PENDING, SCHEDULED or RETRY ``state`` (workflow steps one
        by one, each with its workflow's failure)."""
        if state not in _APPLIES["archive"]:
            return 0
        return await self._all_with_steps("archive", queue, state)

    async def delete_tasks(self, queue: str, state: TaskState) -> int:
        """Delete every task in ``state`` (workflow steps one by one, each with its
        workflow's failure); 0 for ACTIVE."""
        if state not in _APPLIES["delete"]:
            return 0
        return await self._all_with_steps("delete", queue, state)

    async def _all_with_steps(self, op: str, queue: str, state: TaskState) -> int:
        """The other tasks in batches (the script leaves workflow steps alone and names them),
        then each step in one script with its workflow's failure."""
        total, steps = await self._manage_all(op, queue, state, leave_steps=True)
        for task_id in dict.fromkeys(steps):
            try:
                await self._manage_step(op, queue, task_id)
                total += 1
            except TaskNotFoundError:
                pass  # it moved on meanwhile (claimed, deleted): not in the state any more
        return total

    async def delete_queue(self, queue: str, *, force: bool) -> None:
        """Remove ``queue`` (see the protocol); with ``force``, the workflow steps among its
        tasks are deleted first, each with its workflow's failure, unless a task is ACTIVE."""
        if force and not await self._active_count(queue):
            for state in _APPLIES["delete"]:
                await self._steps_in(queue, state, "delete")
        await super().delete_queue(queue, force=force)

    async def _active_count(self, queue: str) -> int:
        with self._errors():
            return int(await self._client.zcard(self._keys(queue).active))

    async def _steps_in(self, queue: str, state: TaskState, op: str) -> int:
        """Archive or delete the workflow steps in ``state`` one by one (before a queue's
        delete); return how many."""
        k = self._keys(queue)
        key = {
            TaskState.PENDING: k.pending,
            TaskState.SCHEDULED: k.scheduled,
            TaskState.RETRY: k.retry,
            TaskState.ARCHIVED: k.archived,
            TaskState.COMPLETED: k.completed,
        }[state]
        with self._errors():
            ids = [_text(i) for i in await self._client.zrange(key, 0, -1)]
        done = 0
        for task_id in ids:
            if parse_step_task_id(task_id) is None:
                continue
            try:
                await self._manage_step(op, queue, task_id)
                done += 1
            except TaskNotFoundError:
                pass  # it moved on meanwhile (claimed, deleted): not in the state any more
        return done

    async def _manage_step(self, op: str, queue: str, task_id: str) -> None:
        step = parse_step_task_id(task_id)
        assert step is not None
        with self._errors():
            raw = await self._client.hmget(
                self._keys(queue).task_prefix + task_id, ["state", "last_error"]
            )
        if raw[0] is None:
            raise not_found(queue, task_id)
        state = _text(raw[0])
        if state not in {s.value for s in _APPLIES[op]}:
            raise not_found(queue, task_id, f" that can be {op}d (it is {state})")
        error = DELETED_ERROR if op == "delete" else (_text(raw[1]) if raw[1] else ARCHIVED_ERROR)
        if self._cluster:
            # The workflow's failure first (its slot; error callbacks via the outbox), then
            # the task, as lease recovery does.
            await self._fail_expired_outboxed(task_id, error)
            await (super().archive_task if op == "archive" else super().delete_task)(queue, task_id)
            return
        async with self._workflow_locks.hold(step[0]):
            while True:
                reply = await self._manage_once(op, queue, task_id, step, error)
                if reply[0] != _STALE:
                    break
        if reply[0] == 0:
            raise not_found(queue, task_id)
        if reply[0] == b"state":
            raise not_found(queue, task_id, f" that can be {op}d (it is {_text(reply[1])})")
        if reply[0] in (b"conflict", b"duplicate"):
            raise TaskIdConflictError(f"a workflow step conflicts with a stored task: {reply!r}")

    async def _manage_once(
        self, op: str, queue: str, task_id: str, step: tuple[str, int], error: str
    ) -> Any:
        rec = await self._read(step[0], results=False)
        change: engine.Change | None = None
        messages: list[TaskMessage] = []
        if rec is not None and step[1] < len(rec.steps):
            graph = engine.parse_graph(rec.graph)
            change = engine.settle(graph, rec, step[1], StepOutcome(succeeded=False, error=error))
            messages = [] if change is None else change.messages(graph)
        batch = ScriptBatch(self)
        batch.block(queue)
        meta = [message_args(m, batch.block(m.queue)) for m in messages]
        written = rec is not None and change is not None
        args: list[Any] = [
            op,
            task_id,
            str(rec.version) if written and rec is not None else "",
            change_json(rec, change, step[1]) if rec is not None and change is not None else "",
            error.encode(),
            json.dumps(meta, separators=(",", ":")),
            *(m.payload for m in messages),
        ]
        return await self._run("wf_manage", [*batch.keys, *self._workflow_tail(step[0])], args)
