"""The inspector's queue methods: names, counts, throughput, latency, pause, delete."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from conveyor.brokers.throughput import MINUTE_TOTALS_KEPT, MinuteTotals, Throughput
from conveyor.errors import ConfigError
from conveyor.inspector.base import InspectorBase, queue_name
from conveyor.message import QueueStats, TaskState


class QueueMethods(InspectorBase):
    """Queues: what they hold, how fast they move, pausing and deleting them."""

    async def queues(self) -> list[str]:
        """Names of every queue that has held a task or been paused, sorted."""
        return await self._broker.list_queues()

    async def queue_info(self, queue: str) -> QueueStats:
        """Counts by state, size, paused flag, today's processed/failed totals, length limit."""
        stats = await self._broker.queue_stats(queue_name(queue))
        limit = await self._flow().queue_limit(queue)
        return stats if limit is None else replace(stats, max_length=limit.max_length)

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
        return await broker.throughput(queue_name(queue), minutes=minutes)

    async def pause_queue(self, queue: str) -> None:
        """Stop workers claiming from ``queue`` (enqueueing still works)."""
        await self._broker.pause_queue(queue_name(queue))

    async def unpause_queue(self, queue: str) -> None:
        """Let workers claim from ``queue`` again."""
        await self._broker.unpause_queue(queue_name(queue))

    async def queue_latency(self, queue: str) -> timedelta:
        """How long the oldest pending task of ``queue`` has waited to be claimed (0 if none).

        Measured from when it became ready (enqueued, or due after a delay or retry) to now.
        """
        page = await self._broker.list_tasks(queue_name(queue), TaskState.PENDING, limit=1)
        since = page[0].next_process_at or page[0].enqueued_at if page else None
        if since is None:
            return timedelta(0)
        return max(timedelta(0), datetime.now(UTC) - since)

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
        await self._broker.delete_queue(queue_name(queue), force=force)
