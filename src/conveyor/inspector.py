"""Looking at and steering stored tasks: list, inspect, re-run, archive, delete, pause.

``AsyncInspector`` is the async core; ``Inspector`` is its sync facade (same method names). Both
talk to storage only through the :class:`~conveyor.brokers.protocol.Broker` protocol.

Example::

    with Inspector("sqlite:///conveyor.db") as inspector:
        for queue in inspector.queues():
            print(inspector.queue_info(queue))
        inspector.run_all_tasks("default", "archived")
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Unpack

from conveyor.broker_handle import BrokerHandle, SyncFacade
from conveyor.brokers.history import AttemptHistory
from conveyor.brokers.limits import FlowControl, Overflow, QueueLimit, Rate, check_max_active
from conveyor.brokers.progress import ProgressStore
from conveyor.brokers.protocol import Broker, BrokerInfo
from conveyor.brokers.throughput import MINUTE_TOTALS_KEPT, MinuteTotals, Throughput
from conveyor.brokers.workers import WorkerInfo, WorkerRegistry
from conveyor.brokers.workflows import WorkflowState
from conveyor.config import DEFAULT_BROKER_URL, broker_url_from_env
from conveyor.errors import BrokerError, ConfigError, PayloadError
from conveyor.message import Payload, QueueStats, TaskInfo, TaskState, validate_name
from conveyor.options import DefaultOptions
from conveyor.progress import result_log, resume_interrupted
from conveyor.scheduling.admin import (
    add_schedule,
    list_schedules,
    pause_schedule,
    remove_schedule,
    unpause_schedule,
)
from conveyor.scheduling.entry import ScheduleInfo
from conveyor.scheduling.scheduler import schedule_store
from conveyor.workflows.info import WorkflowInfo, load_infos
from conveyor.workflows.running import workflows_of

__all__ = ["AsyncInspector", "Inspector"]

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
"""The largest page ``list_tasks`` returns: bounds memory however large a queue grows."""


def _state(state: TaskState | str) -> TaskState:
    try:
        return TaskState(state)
    except ValueError:
        names = ", ".join(s.value for s in TaskState)
        raise ConfigError(f"unknown task state {state!r}: must be one of {names}") from None


_OVERFLOWS: dict[str, Overflow] = {"reject": "reject", "drop_oldest": "drop_oldest"}


def _overflow(value: str) -> Overflow:
    if value in _OVERFLOWS:
        return _OVERFLOWS[value]
    raise ConfigError(f"overflow must be 'reject' or 'drop_oldest', not {value!r}")


def _queue(queue: str) -> str:
    return validate_name(queue, what="queue name")


def _registry(broker: Broker) -> WorkerRegistry:
    if not isinstance(broker, WorkerRegistry):
        raise BrokerError(f"{type(broker).__name__} keeps no worker registry")
    return broker


class AsyncInspector(BrokerHandle):
    """Inspects and manages queues and tasks from async code.

    Args:
        broker: a broker URL or a Broker instance (an instance is not closed by the inspector).

    Raises:
        ConfigError: a bad URL (without its password).
    """

    def __init__(self, broker: str | Broker = DEFAULT_BROKER_URL) -> None:
        super().__init__(broker)

    @classmethod
    def from_env(cls) -> AsyncInspector:
        """An inspector for ``$CONVEYOR_BROKER_URL`` (default ``sqlite:///conveyor.db``)."""
        return cls(broker_url_from_env())

    def __repr__(self) -> str:
        return f"AsyncInspector({self._label!r})"

    async def describe(self) -> BrokerInfo:
        """The broker's backend, location (password redacted), durability and warnings."""
        return await self._broker.describe()

    async def queues(self) -> list[str]:
        """Names of every queue that has held a task or been paused, sorted."""
        return await self._broker.list_queues()

    async def queue_info(self, queue: str) -> QueueStats:
        """Counts by state, size, paused flag, today's processed/failed totals, length limit."""
        stats = await self._broker.queue_stats(_queue(queue))
        limit = await self._flow().queue_limit(queue)
        return stats if limit is None else replace(stats, max_length=limit.max_length)

    def _flow(self) -> FlowControl:
        if not isinstance(self._broker, FlowControl):
            raise ConfigError(f"{type(self._broker).__name__} does not keep flow-control limits")
        return self._broker

    async def set_queue_limit(
        self, queue: str, max_length: int | None, overflow: str = "reject"
    ) -> None:
        """Limit ``queue`` to ``max_length`` pending, scheduled and retry tasks.

        Args:
            queue: the queue name.
            max_length: the most tasks that may wait in the queue; ``None`` removes the limit.
            overflow: ``"reject"`` (an enqueue past the limit raises
                :class:`~conveyor.errors.QueueFullError` and stores nothing) or ``"drop_oldest"``
                (the oldest pending tasks are archived as ``"dropped: queue full"`` to make room).

        Raises:
            ConfigError: a bad queue name, length or overflow.
        """
        limit = None
        if max_length is not None:
            limit = QueueLimit(max_length=max_length, overflow=_overflow(overflow))
        await self._flow().set_queue_limit(_queue(queue), limit)

    async def queue_limit(self, queue: str) -> QueueLimit | None:
        """``queue``'s length limit, ``None`` when it has none."""
        return await self._flow().queue_limit(_queue(queue))

    async def set_rate_limit(self, task_type: str, rate: str | Rate | None) -> None:
        """Let at most ``rate`` tasks of ``task_type`` start, across every worker.

        Args:
            task_type: the task type.
            rate: ``"10/s"``, ``"600/m"``, ``"100/10s"`` (units ``s``, ``m``, ``h``), a
                :class:`~conveyor.brokers.limits.Rate`, or ``None`` to remove the limit.

        Raises:
            ConfigError: a bad task type or rate string (naming the bad part).
        """
        parsed = Rate.parse(rate) if isinstance(rate, str) else rate
        await self._flow().set_rate_limit(validate_name(task_type, what="task type"), parsed)

    async def rate_limits(self) -> dict[str, Rate]:
        """Every task type's rate limit."""
        return await self._flow().rate_limits()

    async def set_task_concurrency(self, task_type: str, max_active: int | None) -> None:
        """Let at most ``max_active`` tasks of ``task_type`` be active at once, across every
        worker (``None`` removes the limit).

        Raises:
            ConfigError: a bad task type, or ``max_active`` not a whole number >= 1.
        """
        limit = None if max_active is None else check_max_active(max_active)
        await self._flow().set_task_concurrency(validate_name(task_type, what="task type"), limit)

    async def task_concurrency(self) -> dict[str, int]:
        """Every task type's concurrency limit."""
        return await self._flow().task_concurrency()

    async def set_queue_concurrency(self, queue: str, max_active: int | None) -> None:
        """Let at most ``max_active`` tasks of ``queue`` be active at once, across every worker
        (``None`` removes the limit). Workers pass over a queue at its limit like an empty one.

        Raises:
            ConfigError: a bad queue name, or ``max_active`` not a whole number >= 1.
        """
        limit = None if max_active is None else check_max_active(max_active)
        await self._flow().set_queue_concurrency(_queue(queue), limit)

    async def queue_concurrency(self, queue: str) -> int | None:
        """``queue``'s concurrency limit, ``None`` when it has none."""
        return await self._flow().queue_concurrency(_queue(queue))

    async def throughput(self, queue: str, *, minutes: int = 60) -> list[MinuteTotals]:
        """Processed and failed attempts of each of the last ``minutes`` minutes, oldest first.

        The last entry is the current minute, still counting. Brokers keep
        :data:`~conveyor.brokers.throughput.MINUTE_TOTALS_KEPT` minutes.

        Raises:
            ConfigError: ``minutes`` out of range, a bad queue name, or a broker that keeps no
                per-minute totals (every built-in one does).
        """
        if not 1 <= minutes <= MINUTE_TOTALS_KEPT:
            raise ConfigError(f"minutes must be between 1 and {MINUTE_TOTALS_KEPT}, not {minutes}")
        broker = self._broker
        if not isinstance(broker, Throughput):
            raise ConfigError(f"{type(broker).__name__} keeps no per-minute totals")
        return await broker.throughput(_queue(queue), minutes=minutes)

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
            _queue(queue), _state(state), offset=(page - 1) * size, limit=size
        )

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task. Raises :class:`~conveyor.errors.TaskNotFoundError` if it does not exist.

        It comes with its ``history`` (its failed attempts, the last 20), and a pipeline task
        with its ``result_log`` (the steps it reached).
        """
        info = await self._broker.get_task(_queue(queue), task_id)
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
        await self._broker.delete_task(_queue(queue), task_id)

    async def run_task(self, queue: str, task_id: str) -> None:
        """Make a scheduled, retry or archived task pending now. Raises ``TaskNotFoundError``.

        An archived pipeline task interrupted in a non-reentrant step resumes at that step: the
        step runs again, as the person running it decided (docs/pipelines.md).
        """
        if isinstance(self._broker, ProgressStore):
            await resume_interrupted(self._broker, _queue(queue), task_id)
        await self._broker.run_task(_queue(queue), task_id)

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Archive a pending, scheduled or retry task. Raises ``TaskNotFoundError`` otherwise."""
        await self._broker.archive_task(_queue(queue), task_id)

    async def delete_all_tasks(self, queue: str, state: TaskState | str) -> int:
        """Delete every task in ``state`` (active tasks cannot be deleted); return how many."""
        return await self._broker.delete_tasks(_queue(queue), _state(state))

    async def run_all_tasks(self, queue: str, state: TaskState | str) -> int:
        """Make every scheduled, retry or archived task in ``state`` pending; return how many."""
        return await self._broker.run_tasks(_queue(queue), _state(state))

    async def archive_all_tasks(self, queue: str, state: TaskState | str) -> int:
        """Archive every pending, scheduled or retry task in ``state``; return how many."""
        return await self._broker.archive_tasks(_queue(queue), _state(state))

    async def pause_queue(self, queue: str) -> None:
        """Stop workers claiming from ``queue`` (enqueueing still works)."""
        await self._broker.pause_queue(_queue(queue))

    async def unpause_queue(self, queue: str) -> None:
        """Let workers claim from ``queue`` again."""
        await self._broker.unpause_queue(_queue(queue))

    async def queue_latency(self, queue: str) -> timedelta:
        """How long the oldest pending task of ``queue`` has waited to be claimed (0 if none).

        Measured from when it became ready (enqueued, or due after a delay or retry) to now.
        """
        page = await self._broker.list_tasks(_queue(queue), TaskState.PENDING, limit=1)
        since = page[0].next_process_at or page[0].enqueued_at if page else None
        if since is None:
            return timedelta(0)
        return max(timedelta(0), datetime.now(UTC) - since)

    async def list_workers(self) -> list[WorkerInfo]:
        """Every live worker (its record refreshed within the last few heartbeats), by id.

        A worker that stopped cleanly is gone at once; a killed one within about 30 s.
        """
        return await _registry(self._broker).list_workers()

    async def cancel_task(self, queue: str, task_id: str) -> None:
        """Ask the worker running a task to stop it; the task then ends ARCHIVED, "cancelled".

        Returns once the request is stored; the worker acts on it within about a second (an
        async handler is cancelled; a sync handler's thread is abandoned, see docs/inspector.md).
        A task the worker is already recording the outcome of finishes as it was.

        Raises:
            TaskNotFoundError: no such task in ``queue``.
            TaskNotActiveError: the task is not running (only an ACTIVE task can be cancelled).
        """
        await _registry(self._broker).request_cancel(_queue(queue), task_id)

    async def delete_queue(self, queue: str, *, force: bool = False) -> None:
        """Remove ``queue`` entirely: its tasks, unique locks, counters, pause flag and name.

        Without ``force`` only a queue holding no task (in any state) is deleted. With
        ``force`` its tasks go too, except that a queue with an active task (one a worker
        holds a lease on) is never deleted: pause it and let the active tasks finish first.
        Deleting an unknown queue does nothing. A later enqueue to the name starts afresh.

        Raises:
            QueueNotEmptyError: ``force`` is false and the queue holds tasks; nothing deleted.
            QueueInUseError: the queue has active tasks; nothing deleted.
            InvalidNameError: a bad queue name.
        """
        await self._broker.delete_queue(_queue(queue), force=force)

    # -- schedules (see docs/scheduling.md) ----------------------------------------------------

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule entry in the broker, by name (code-defined and inspector-added)."""
        return await list_schedules(schedule_store(self._broker))

    async def add_schedule(
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
        """Schedule a raw task; an entry of the same name is replaced (kept if identical).

        Any running scheduler fires it; a starting scheduler never removes it.

        Raises:
            ConfigError: a bad name, task type, cron expression, interval, time zone, or
                ``missed`` value (naming the bad part), or a bad option.
        """
        return await add_schedule(
            schedule_store(self._broker),
            name,
            task_type,
            payload,
            cron=cron,
            every=every,
            tz=tz,
            missed=missed,
            options=enqueue_options,
        )

    async def pause_schedule(self, name: str) -> None:
        """Stop an entry firing; its fire times while paused are skipped, not missed.

        Raises:
            ScheduleNotFoundError: (a ``LookupError``) no entry has that name.
        """
        await pause_schedule(schedule_store(self._broker), name)

    async def unpause_schedule(self, name: str) -> None:
        """Let a paused entry fire again, from its next fire time after now.

        Raises:
            ScheduleNotFoundError: (a ``LookupError``) no entry has that name.
        """
        await unpause_schedule(schedule_store(self._broker), name)

    async def remove_schedule(self, name: str) -> None:
        """Delete an entry (a code-defined one comes back when its app's scheduler restarts).

        Raises:
            ScheduleNotFoundError: (a ``LookupError``) no entry has that name.
        """
        await remove_schedule(schedule_store(self._broker), name)

    async def get_workflow(self, workflow_id: str) -> WorkflowInfo:
        """One workflow, with every step's state and result.

        Raises:
            WorkflowNotFoundError: no such workflow (never stored, or purged).
        """
        store = workflows_of(self._broker)
        return (await load_infos(store, [await store.load_workflow(workflow_id)]))[0]

    async def list_workflows(
        self, state: WorkflowState | str | None = None, page: int = 1, size: int = 50
    ) -> list[WorkflowInfo]:
        """A page (numbered from 1) of workflows, newest first, in ``state`` (default: any)."""
        wanted = None if state is None else _workflow_state(state)
        size = max(0, min(size, MAX_PAGE_SIZE))
        store = workflows_of(self._broker)
        records = await store.list_workflows(wanted, offset=(max(page, 1) - 1) * size, limit=size)
        return await load_infos(store, records)

    async def cancel_workflow(self, workflow_id: str) -> bool:
        """Cancel a workflow: steps not yet started never start; running ones finish alone.

        Returns ``False`` when the workflow had already finished.

        Raises:
            WorkflowNotFoundError: no such workflow.
        """
        return await workflows_of(self._broker).cancel_workflow(workflow_id)


def _workflow_state(state: WorkflowState | str) -> WorkflowState:
    try:
        return WorkflowState(state)
    except ValueError:
        names = ", ".join(s.value for s in WorkflowState)
        raise ConfigError(f"unknown workflow state {state!r}: must be one of {names}") from None


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
