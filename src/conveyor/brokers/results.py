"""Waiting for one task's result, woken by the broker (``client.wait`` on a ``TaskInfo``).

A small seam beside :class:`~conveyor.brokers.protocol.Broker`: the caller registers interest in
a task, and the broker wakes it when that task is completed or archived, as idle workers are
woken by new work. Completions nobody waits for pay (almost) nothing: each backend notifies only
when a waiter registered interest in that task (a flag on the Redis record, a row in SQLite, a
dict entry in memory).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from conveyor.message import TaskInfo, TaskState

__all__ = ["DONE_STATES", "ResultWaitBroker"]

DONE_STATES = frozenset({TaskState.COMPLETED, TaskState.ARCHIVED})
"""The states in which a task's wait ends."""


@runtime_checkable
class ResultWaitBroker(Protocol):
    """Waits on one task's outcome, beside :class:`~conveyor.brokers.protocol.Broker`."""

    async def wait_task(self, queue: str, task_id: str, timeout_s: float) -> TaskInfo:
        """The task once it is COMPLETED or ARCHIVED, or as it is after ``timeout_s``.

        Woken by the broker when the task ends, never by polling fast (a backend may re-read
        now and then in case a wake-up was lost).

        Raises:
            TaskNotFoundError: no such task (never stored, deleted, or past its retention).
        """
        ...
