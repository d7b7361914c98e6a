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

from dataclasses import replace

from conveyor.broker_handle import BrokerHandle, SyncFacade
from conveyor.brokers.limits import FlowControl, Overflow, QueueLimit, Rate, check_max_active
from conveyor.brokers.protocol import Broker, BrokerInfo
from conveyor.config import DEFAULT_BROKER_URL, broker_url_from_env
from conveyor.errors import ConfigError
from conveyor.message import QueueStats, TaskInfo, TaskState, validate_name

__all__ = ["AsyncInspector", "Inspector"]

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
        """One task. Raises :class:`~conveyor.errors.TaskNotFoundError` if it does not exist."""
        return await self._broker.get_task(_queue(queue), task_id)

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not active. Raises ``TaskNotFoundError`` otherwise."""
        await self._broker.delete_task(_queue(queue), task_id)

    async def run_task(self, queue: str, task_id: str) -> None:
        """Make a scheduled, retry or archived task pending now. Raises ``TaskNotFoundError``."""
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

    def delete_queue(self, queue: str, *, force: bool = False) -> None:
        """See :meth:`AsyncInspector.delete_queue`."""
        self._loop.run(self._async.delete_queue(queue, force=force))
