"""The inspector's task methods: list, read, run, archive and delete tasks, one or a state's all."""

from __future__ import annotations

import logging
from dataclasses import replace

from conveyor.brokers.history import AttemptHistory
from conveyor.brokers.progress import ProgressStore
from conveyor.errors import ConfigError, PayloadError
from conveyor.inspector.base import MAX_PAGE_SIZE, InspectorBase, queue_name, task_state
from conveyor.message import TaskInfo, TaskState
from conveyor.progress import result_log, resume_interrupted

logger = logging.getLogger("conveyor.inspector")


class TaskMethods(InspectorBase):
    """Stored tasks: listing and reading them, moving them between states, deleting them."""

    async def list_tasks(
        self, queue: str, state: TaskState | str, *, page: int = 1, size: int = 20
    ) -> list[TaskInfo]:
        """One page of tasks in ``state``, in the order they will run (or ran).

        Args:
            queue: the queue name.
            state: a :class:`~conveyor.message.TaskState` or its value (``"archived"``).
            page: 1-based page number.
            size: tasks per page, 1 to 1000.

        Raises:
            ConfigError: an unknown state, a bad queue name, or a page/size out of range.
        """
        if page < 1:
            raise ConfigError(f"page must be 1 or more, not {page}")
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise ConfigError(f"size must be between 1 and {MAX_PAGE_SIZE}, not {size}")
        return await self._broker.list_tasks(
            queue_name(queue), task_state(state), offset=(page - 1) * size, limit=size
        )

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task. Raises :class:`~conveyor.errors.TaskNotFoundError` if it does not exist.

        It comes with its ``history`` (its failed attempts, the last 20), and a pipeline task
        with its ``result_log`` (the steps it reached).
        """
        info = await self._broker.get_task(queue_name(queue), task_id)
        if info.retried and isinstance(self._broker, AttemptHistory):
            info = replace(info, history=await self._broker.load_history(info.queue, task_id))
        if isinstance(self._broker, ProgressStore):
            raw = await self._broker.load_progress(info.queue, task_id)
            try:
                info = replace(info, result_log=result_log(raw))
            except PayloadError as exc:  # shown without its log; the worker archives it
                logger.warning("task %s: %s", task_id, exc, extra={"task_id": task_id})
        return info

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not active. Raises ``TaskNotFoundError`` otherwise."""
        await self._broker.delete_task(queue_name(queue), task_id)

    async def run_task(self, queue: str, task_id: str) -> None:
        """Make a scheduled, retry or archived task pending now. Raises ``TaskNotFoundError``.

        An archived pipeline task interrupted in a non-reentrant step resumes at that step: the
        step runs again, as the person running it decided (docs/pipelines.md).
        """
        if isinstance(self._broker, ProgressStore):
            await resume_interrupted(self._broker, queue_name(queue), task_id)
        await self._broker.run_task(queue_name(queue), task_id)

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Archive a pending, scheduled or retry task. Raises ``TaskNotFoundError`` otherwise."""
        await self._broker.archive_task(queue_name(queue), task_id)

    async def delete_all_tasks(self, queue: str, state: TaskState | str) -> int:
        """Delete every task in ``state`` (active tasks cannot be deleted); return how many."""
        return await self._broker.delete_tasks(queue_name(queue), task_state(state))

    async def run_all_tasks(self, queue: str, state: TaskState | str) -> int:
        """Make every scheduled, retry or archived task in ``state`` pending; return how many."""
        return await self._broker.run_tasks(queue_name(queue), task_state(state))

    async def archive_all_tasks(self, queue: str, state: TaskState | str) -> int:
        """Archive every pending, scheduled or retry task in ``state``; return how many."""
        return await self._broker.archive_tasks(queue_name(queue), task_state(state))
