"""``Inspector``: the sync facade of :class:`~conveyor.inspector.AsyncInspector`."""

from __future__ import annotations

from datetime import timedelta
from typing import Unpack

from conveyor.broker_handle import SyncFacade
from conveyor.brokers.limits import QueueLimit, Rate
from conveyor.brokers.protocol import Broker, BrokerInfo
from conveyor.brokers.throughput import MinuteTotals
from conveyor.brokers.workers import WorkerInfo
from conveyor.brokers.workflows import WorkflowState
from conveyor.config import DEFAULT_BROKER_URL, broker_url_from_env
from conveyor.inspector.core import AsyncInspector
from conveyor.message import Payload, QueueStats, TaskInfo, TaskState
from conveyor.options import DefaultOptions
from conveyor.scheduling.entry import ScheduleInfo
from conveyor.workflows.info import WorkflowInfo


class Inspector(SyncFacade[AsyncInspector]):
    """Inspects and manages queues and tasks from sync code; methods as :class:`AsyncInspector`.

    Args:
        broker: a broker URL or a Broker instance not in use by another event loop.

    Example::

        with Inspector("sqlite:///conveyor.db") as inspector:
            stats = inspector.queue_info("default")
            print(stats.pending, stats.archived)
    """

    def __init__(self, broker: str | Broker = DEFAULT_BROKER_URL) -> None:
        super().__init__(AsyncInspector(broker), "conveyor-inspector")

    @classmethod
    def from_env(cls) -> Inspector:
        """An inspector for ``$CONVEYOR_BROKER_URL`` (default ``sqlite:///conveyor.db``)."""
        return cls(broker_url_from_env())

    def __repr__(self) -> str:
        return f"Inspector({self._async._label!r})"

    def describe(self) -> BrokerInfo:
        """See :meth:`AsyncInspector.describe`."""
        return self._loop.run(self._async.describe())

    def set_queue_limit(self, queue: str, max_length: int | None, overflow: str = "reject") -> None:
        """See :meth:`AsyncInspector.set_queue_limit`."""
        return self._loop.run(self._async.set_queue_limit(queue, max_length, overflow))

    def queue_limit(self, queue: str) -> QueueLimit | None:
        """See :meth:`AsyncInspector.queue_limit`."""
        return self._loop.run(self._async.queue_limit(queue))

    def set_rate_limit(self, task_type: str, rate: str | Rate | None) -> None:
        """See :meth:`AsyncInspector.set_rate_limit`."""
        return self._loop.run(self._async.set_rate_limit(task_type, rate))

    def rate_limits(self) -> dict[str, Rate]:
        """See :meth:`AsyncInspector.rate_limits`."""
        return self._loop.run(self._async.rate_limits())

    def set_task_concurrency(self, task_type: str, max_active: int | None) -> None:
        """See :meth:`AsyncInspector.set_task_concurrency`."""
        return self._loop.run(self._async.set_task_concurrency(task_type, max_active))

    def task_concurrency(self) -> dict[str, int]:
        """See :meth:`AsyncInspector.task_concurrency`."""
        return self._loop.run(self._async.task_concurrency())

    def set_queue_concurrency(self, queue: str, max_active: int | None) -> None:
        """See :meth:`AsyncInspector.set_queue_concurrency`."""
        return self._loop.run(self._async.set_queue_concurrency(queue, max_active))

    def queue_concurrency(self, queue: str) -> int | None:
        """See :meth:`AsyncInspector.queue_concurrency`."""
        return self._loop.run(self._async.queue_concurrency(queue))

    def queues(self) -> list[str]:
        """See :meth:`AsyncInspector.queues`."""
        return self._loop.run(self._async.queues())

    def queue_info(self, queue: str) -> QueueStats:
        """See :meth:`AsyncInspector.queue_info`."""
        return self._loop.run(self._async.queue_info(queue))

    def throughput(self, queue: str, *, minutes: int = 60) -> list[MinuteTotals]:
        """See :meth:`AsyncInspector.throughput`."""
        return self._loop.run(self._async.throughput(queue, minutes=minutes))

    def list_tasks(
        self, queue: str, state: TaskState | str, *, page: int = 1, size: int = 20
    ) -> list[TaskInfo]:
        """See :meth:`AsyncInspector.list_tasks`."""
        return self._loop.run(self._async.list_tasks(queue, state, page=page, size=size))

    def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """See :meth:`AsyncInspector.get_task`."""
        return self._loop.run(self._async.get_task(queue, task_id))

    def delete_task(self, queue: str, task_id: str) -> None:
        """See :meth:`AsyncInspector.delete_task`."""
        self._loop.run(self._async.delete_task(queue, task_id))

    def run_task(self, queue: str, task_id: str) -> None:
        """See :meth:`AsyncInspector.run_task`."""
        self._loop.run(self._async.run_task(queue, task_id))

    def archive_task(self, queue: str, task_id: str) -> None:
        """See :meth:`AsyncInspector.archive_task`."""
        self._loop.run(self._async.archive_task(queue, task_id))

    def delete_all_tasks(self, queue: str, state: TaskState | str) -> int:
        """See :meth:`AsyncInspector.delete_all_tasks`."""
        return self._loop.run(self._async.delete_all_tasks(queue, state))

    def run_all_tasks(self, queue: str, state: TaskState | str) -> int:
        """See :meth:`AsyncInspector.run_all_tasks`."""
        return self._loop.run(self._async.run_all_tasks(queue, state))

    def archive_all_tasks(self, queue: str, state: TaskState | str) -> int:
        """See :meth:`AsyncInspector.archive_all_tasks`."""
        return self._loop.run(self._async.archive_all_tasks(queue, state))

    def pause_queue(self, queue: str) -> None:
        """See :meth:`AsyncInspector.pause_queue`."""
        self._loop.run(self._async.pause_queue(queue))

    def unpause_queue(self, queue: str) -> None:
        """See :meth:`AsyncInspector.unpause_queue`."""
        self._loop.run(self._async.unpause_queue(queue))

    def queue_latency(self, queue: str) -> timedelta:
        """See :meth:`AsyncInspector.queue_latency`."""
        return self._loop.run(self._async.queue_latency(queue))

    def list_workers(self) -> list[WorkerInfo]:
        """See :meth:`AsyncInspector.list_workers`."""
        return self._loop.run(self._async.list_workers())

    def cancel_task(self, queue: str, task_id: str) -> None:
        """See :meth:`AsyncInspector.cancel_task`."""
        self._loop.run(self._async.cancel_task(queue, task_id))

    def delete_queue(self, queue: str, *, force: bool = False) -> None:
        """See :meth:`AsyncInspector.delete_queue`."""
        self._loop.run(self._async.delete_queue(queue, force=force))

    def list_schedules(self) -> list[ScheduleInfo]:
        """See :meth:`AsyncInspector.list_schedules`."""
        return self._loop.run(self._async.list_schedules())

    def add_schedule(
        self,
        name: str,
        task_type: str,
        payload: Payload = None,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        missed: str = "once",
        **enqueue_options: Unpack[DefaultOptions],
    ) -> ScheduleInfo:
        """See :meth:`AsyncInspector.add_schedule`."""
        return self._loop.run(
            self._async.add_schedule(
                name, task_type, payload, cron=cron, every=every, tz=tz, missed=missed,
                **enqueue_options,
            )
        )  # fmt: skip

    def pause_schedule(self, name: str) -> None:
        """See :meth:`AsyncInspector.pause_schedule`."""
        self._loop.run(self._async.pause_schedule(name))

    def unpause_schedule(self, name: str) -> None:
        """See :meth:`AsyncInspector.unpause_schedule`."""
        self._loop.run(self._async.unpause_schedule(name))

    def remove_schedule(self, name: str) -> None:
        """See :meth:`AsyncInspector.remove_schedule`."""
        self._loop.run(self._async.remove_schedule(name))

    def get_workflow(self, workflow_id: str) -> WorkflowInfo:
        """One workflow; see :meth:`AsyncInspector.get_workflow`."""
        return self._loop.run(self._async.get_workflow(workflow_id))

    def list_workflows(
        self, state: WorkflowState | str | None = None, page: int = 1, size: int = 50
    ) -> list[WorkflowInfo]:
        """A page of workflows; see :meth:`AsyncInspector.list_workflows`."""
        return self._loop.run(self._async.list_workflows(state, page, size))

    def cancel_workflow(self, workflow_id: str) -> bool:
        """Cancel a workflow; see :meth:`AsyncInspector.cancel_workflow`."""
        return self._loop.run(self._async.cancel_workflow(workflow_id))
