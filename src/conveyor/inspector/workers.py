"""The inspector's worker methods: the live workers and cancelling a running task."""

from __future__ import annotations

from conveyor.brokers.workers import WorkerInfo
from conveyor.inspector.base import InspectorBase, queue_name, worker_registry


class WorkerMethods(InspectorBase):
    """The worker registry: who is alive, and asking one to cancel a task."""

    async def list_workers(self) -> list[WorkerInfo]:
        """Every live worker (its record refreshed within the last few heartbeats), by id.

        A worker that stopped cleanly is gone at once; a killed one within about 30 s.
        """
        return await worker_registry(self._broker).list_workers()

    async def cancel_task(self, queue: str, task_id: str) -> None:
        """Ask the worker running a task to stop it; the task then ends ARCHIVED, "cancelled".

        Returns once the request is stored; the worker acts on it within about a second (an
        async handler is cancelled; a sync handler's thread is abandoned, see docs/inspector.md).
        A task the worker is already recording the outcome of finishes as it was.

        Raises:
            TaskNotFoundError: no such task in ``queue``.
            TaskNotActiveError: the task is not running (only an ACTIVE task can be cancelled).
        """
        await worker_registry(self._broker).request_cancel(queue_name(queue), task_id)
