"""Running sync handlers in the worker's thread pool, and giving up on them when cancelled.

A sync handler runs in a :class:`~conveyor.worker.pool.HandlerThreadPool` thread with the
contextvars of its attempt (so ``current_context()`` works there). A thread cannot be stopped:
when its attempt is cancelled, the handler is told through ``ctx.cancelled`` and gets a grace to
notice and return, so its thread goes back to the pool. One still running after the grace is
abandoned: its thread finishes alone, its outcome is ignored, and the pool starts a replacement so
the worker keeps its full concurrency.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

from conveyor.message import JSONValue, Task
from conveyor.middleware import SyncHandler
from conveyor.worker.context import TaskContext
from conveyor.worker.pool import HandlerThreadPool
from conveyor.worker.stats import WorkerStats

logger = logging.getLogger(__name__)

SYNC_CANCEL_GRACE_S = 1.0
"""How long an interrupted sync handler has to notice ``ctx.cancelled`` and return before its
thread is abandoned (its outcome is ignored either way)."""


class SyncRunner:
    """Runs sync handlers in ``pool``; :meth:`run` is every task context's ``run_sync``.

    Args:
        pool: the thread pool for sync handlers.
        stats: the server's counters (abandoned threads are counted).
        grace_s: how long a cancelled handler has to return before its thread is abandoned.
    """

    __slots__ = ("_grace_s", "_pool", "_stats")

    def __init__(
        self, pool: HandlerThreadPool, stats: WorkerStats, grace_s: float = SYNC_CANCEL_GRACE_S
    ) -> None:
        self._pool = pool
        self._stats = stats
        self._grace_s = grace_s

    async def run(self, fn: SyncHandler, ctx: TaskContext, task: Task) -> JSONValue:
        """Run a sync handler in the pool, with this task's contextvars (current_context).

        Cancelled while the handler runs, it sets ``ctx.cancelled`` and gives the handler the
        grace to notice and return, so its thread goes back to the pool; a handler still running
        then is abandoned. Either way its outcome is ignored.
        """
        run = self._pool.run(contextvars.copy_context().run, fn, ctx, task)
        try:
            return await run
        except asyncio.CancelledError:
            if run.cancel() or run.done():
                raise
            ctx.cancel()
            try:
                # A handler that checks ctx.cancelled returns soon: wait for it briefly.
                await asyncio.wait({run.ended()}, timeout=self._grace_s)
            finally:
                if not run.done():
                    # A running thread cannot be stopped: abandon it, ignore its outcome, and
                    # let the pool replace it so the worker keeps its full concurrency.
                    self._pool.abandon()
                    self._stats.abandoned_threads += 1
                    logger.warning(
                        "abandoned the sync handler of task %s; its thread runs on until it "
                        "returns",
                        ctx.task_id,
                    )
            raise
