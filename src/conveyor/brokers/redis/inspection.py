"""Upkeep and administration: recovering lapsed leases, purging old tasks, and what the inspector
reads and changes (stats, pages of tasks, run/archive/delete, pause, delete a queue). Kept off
the hot path producers and workers run: only the janitor, recoverer and operators call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.brokers.protocol import (
    DAILY_TOTALS_KEPT_DAYS,
    LEASE_EXPIRED_ERROR,
    MAX_CRASH_ATTEMPTS,
    crash_limit_error,
)
from conveyor.brokers.redis import keys
from conveyor.brokers.redis.base import RedisBrokerBase
from conveyor.brokers.redis.records import decode_record, float_field, pairs
from conveyor.brokers.redis.replies import as_bytes, not_found
from conveyor.brokers.throughput import MINUTE_TOTALS_KEPT
from conveyor.errors import QueueInUseError, QueueNotEmptyError
from conveyor.message import QueueStats, TaskInfo, TaskState

WAKE_TOKENS = 8  # as in scripts/lib.lua: several idle workers on one queue all wake
BATCH = 500  # tasks per upkeep/bulk script call: bounds how long one script blocks Redis
_DELETABLE = (
    TaskState.PENDING,
    TaskState.SCHEDULED,
    TaskState.RETRY,
    TaskState.ARCHIVED,
    TaskState.COMPLETED,
)


class InspectionMixin(RedisBrokerBase):
    """The upkeep and inspection calls of :class:`~conveyor.brokers.redis.RedisBroker`."""

    async def _per_queue_batches(self, name: str, args: Sequence[Any]) -> int:
        total = 0
        for queue in await self._all_queues():
            more = 1
            while more:
                count, more = await self._run(name, self._keys(queue).block, args)
                total += int(count)
        return total

    async def recover_expired(
        self, *, delay_s: float, max_crashes: int = MAX_CRASH_ATTEMPTS
    ) -> int:
        """Fail every ACTIVE task whose lease lapsed: RETRY, or ARCHIVED when out of retries
        or at its ``max_crashes``-th lost lease (a ``crashes`` field of the task's hash)."""
        delay = round(max(delay_s, 0.0) * 1_000_000)
        args = [delay, LEASE_EXPIRED_ERROR, BATCH, max_crashes, crash_limit_error(max_crashes)]
        return await self._per_queue_batches("recover", args)

    async def purge_expired(self) -> int:
        """Delete COMPLETED tasks past retention and old daily totals (see the protocol).

        Unique locks expire in Redis by themselves.
        """
        args = [BATCH, DAILY_TOTALS_KEPT_DAYS, MINUTE_TOTALS_KEPT]
        return await self._per_queue_batches("purge", args)

    # -- inspecting ----------------------------------------------------------------------------

    async def list_queues(self) -> list[str]:
        """Every queue ever enqueued to or paused, sorted."""
        return await self._all_queues()

    async def queue_stats(self, queue: str) -> QueueStats:
        """Counts by state, paused flag and today's (UTC, server clock) totals."""
        r = [int(v) for v in await self._run("stats", self._keys(queue).block, [])]
        return QueueStats(
            queue=queue,
            pending=r[0],
            scheduled=r[1],
            retry=r[2],
            active=r[3],
            archived=r[4],
            completed=r[5],
            paused=bool(r[6]),
            processed_today=r[7],
            failed_today=r[8],
        )

    async def list_tasks(
        self, queue: str, state: TaskState, *, offset: int = 0, limit: int = 100
    ) -> list[TaskInfo]:
        """A page of tasks in ``state``: waiting ones by ready time, others by time entered."""
        k = self._keys(queue)
        offset, limit = max(offset, 0), max(limit, 0)
        if limit == 0:
            return []
        if state is TaskState.ACTIVE:
            # The active set is ordered by lease expiry; sort by claim time instead.
            first, last = 0, -1
        else:
            first, last = offset, offset + limit - 1
        reply = await self._run("page", k.block, [state.value, first, last])
        found = [(raw_id.decode(errors="replace"), pairs(flat)) for raw_id, flat in reply]
        if state is TaskState.ACTIVE:
            # A garbled 'since' (a damaged record) sorts first instead of failing the page.
            found.sort(key=lambda item: float_field(item[1].get(b"since")) or 0.0)
            found = found[offset : offset + limit]
        return [decode_record(queue, task_id, rec) for task_id, rec in found]

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task; raises ``TaskNotFoundError`` when it does not exist."""
        k = self._keys(queue)
        with self._errors():
            reply = await self._client.hgetall(k.task_prefix + task_id)
        fields = {as_bytes(key): as_bytes(value) for key, value in reply.items()}
        if not fields:
            raise not_found(queue, task_id)
        return decode_record(queue, task_id, fields)

    async def _manage_one(self, op: str, queue: str, task_id: str) -> None:
        reply = await self._run("manage", self._keys(queue).block, [op, "one", task_id])
        if reply == 0:
            raise not_found(queue, task_id)
        if isinstance(reply, bytes):
            raise not_found(queue, task_id, f" that can be {op}d (it is {reply.decode()})")

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not ACTIVE, releasing its unique lock."""
        await self._manage_one("delete", queue, task_id)

    async def run_task(self, queue: str, task_id: str) -> None:
        """Make a SCHEDULED, RETRY or ARCHIVED task PENDING, ready now."""
        await self._manage_one("run", queue, task_id)

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Move a PENDING, SCHEDULED or RETRY task to ARCHIVED."""
        await self._manage_one("archive", queue, task_id)

    async def _manage_all(
        self, op: str, queue: str, state: TaskState, *, leave_steps: bool = False
    ) -> tuple[int, list[str]]:
        """Act on every task in ``state``, ``BATCH`` tasks per script run; return how many,
        and (``leave_steps``) the ids of the workflow steps left alone in the state.

        Each run is atomic; the whole is not, so Redis serves other clients between runs however
        many tasks the state holds. Tasks entering the state meanwhile may be included, up to
        as many tasks in all as the state held at the first run (so a queue that is fed faster
        than this empties it cannot keep the call going).
        """
        block = self._keys(queue).block
        total, budget, first = 0, BATCH, True
        steps: list[str] = []
        while total < budget:
            limit = min(BATCH, budget - total)
            args = [op, "all", state.value, limit, len(steps), int(leave_steps)]
            reply = await self._run("manage", block, args)
            changed, left = int(reply[0]), int(reply[1])
            found = [as_bytes(v).decode(errors="replace") for v in reply[2:]]
            if first:
                budget, first = changed + left, False  # what the state held at the first run
            total += changed
            steps.extend(found)
            if not (changed or found) or not left:
                break
        return total, steps

    async def delete_tasks(self, queue: str, state: TaskState) -> int:
        """Delete every task in ``state``; 0 for ACTIVE."""
        return (await self._manage_all("delete", queue, state))[0]

    async def run_tasks(self, queue: str, state: TaskState) -> int:
        """Make every task in a SCHEDULED, RETRY or ARCHIVED ``state`` PENDING."""
        return (await self._manage_all("run", queue, state))[0]

    async def archive_tasks(self, queue: str, state: TaskState) -> int:
        """Archive every task in a PENDING, SCHEDULED or RETRY ``state``."""
        return (await self._manage_all("archive", queue, state))[0]

    async def pause_queue(self, queue: str) -> None:
        """Stop claims from ``queue``; enqueueing still works."""
        k = self._keys(queue)
        with self._errors():
            await self._client.sadd(keys.registry(self._ns), queue)  # rare: never cached
            await self._client.set(k.paused, b"1")

    async def unpause_queue(self, queue: str) -> None:
        """Let claims from ``queue`` resume, waking idle workers."""
        k = self._keys(queue)
        with self._errors():
            await self._client.sadd(keys.registry(self._ns), queue)
            await self._client.delete(k.paused)
            await self._client.lpush(k.wake, *[b"1"] * WAKE_TOKENS)
            await self._client.ltrim(k.wake, 0, WAKE_TOKENS - 1)

    async def delete_queue(self, queue: str, *, force: bool) -> None:
        """Remove ``queue`` and everything in it in one script run (see the protocol).

        A forced delete of a queue holding more than ``BATCH`` tasks first pauses it and
        deletes its tasks ``BATCH`` at a time (see :meth:`_empty_for_delete`), so the final
        script has little left to do and Redis is never blocked for long.

        The queue's ``seq`` key stays so fencing tokens never repeat. On Cluster the registry
        is in another slot: its entry is removed right after the script, and other broker
        objects that still use the queue list it again within ``REGISTRY_REFRESH_S`` of their
        next enqueue or claim (see ``_register``). A standalone server's enqueue registers in
        the same step as it stores, so it has no such gap.
        """
        if force:
            await self._empty_for_delete(queue)
        k = self._keys(queue)
        registry = [] if self._cluster else [keys.registry(self._ns)]
        code, count = await self._run("delete_queue", [*k.block, *registry], [int(force), queue])
        if code == 1:
            raise QueueNotEmptyError(queue=queue, tasks=int(count))
        if code == 2:
            raise QueueInUseError(queue=queue, active=int(count))
        # This object's next use of the queue must add it to the registry again.
        self._registered.pop(queue, None)
        with self._errors():  # no task is active now, so every cancel request had ended
            await self._client.delete(keys.cancels(self._ns, queue))
        if self._cluster:
            with self._errors():
                await self._client.srem(keys.registry(self._ns), queue)

    async def _empty_for_delete(self, queue: str) -> None:
        """Before a forced delete of a big queue: pause it, then delete its tasks in batches.

        Pausing first means no task can become ACTIVE meanwhile (claims skip a paused queue),
        so a refusal because of an active task comes before anything is deleted, as in the
        one-script delete. If this is interrupted, the queue stays paused with part of its
        tasks gone: deleting it again finishes the job.
        """
        stats = await self.queue_stats(queue)
        held = stats.pending + stats.scheduled + stats.retry + stats.archived + stats.completed
        if stats.active or held <= BATCH:
            return  # the script refuses, or deletes it all quickly
        await self.pause_queue(queue)
        active = (await self.queue_stats(queue)).active
        if active:  # claimed between the two reads
            if not stats.paused:
                await self.unpause_queue(queue)
            raise QueueInUseError(queue=queue, active=active)
        for state in _DELETABLE:
            await self._manage_all("delete", queue, state)
