"""The inspector's flow-control methods: queue lengths, rates, concurrency (flow-control.md)."""

from __future__ import annotations

from conveyor.brokers.limits import QueueLimit, Rate, check_max_active
from conveyor.inspector.base import InspectorBase, overflow_policy, queue_name
from conveyor.message import validate_name


class LimitMethods(InspectorBase):
    """Flow-control limits, read and set across every worker."""

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
            limit = QueueLimit(max_length=max_length, overflow=overflow_policy(overflow))
        await self._flow().set_queue_limit(queue_name(queue), limit)

    async def queue_limit(self, queue: str) -> QueueLimit | None:
        """``queue``'s length limit, ``None`` when it has none."""
        return await self._flow().queue_limit(queue_name(queue))

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
        await self._flow().set_queue_concurrency(queue_name(queue), limit)

    async def queue_concurrency(self, queue: str) -> int | None:
        """``queue``'s concurrency limit, ``None`` when it has none."""
        return await self._flow().queue_concurrency(queue_name(queue))
