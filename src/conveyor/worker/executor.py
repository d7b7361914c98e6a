"""Executor: runs each claimed task's attempt.

One asyncio task per attempt: decode the payload, run the handler under its time limit, then
hand the outcome to :class:`~conveyor.worker.outcomes.Outcomes` (completion through the
:class:`~conveyor.worker.completer.Completer`; retry, archive or release directly). An attempt
can be *interrupted* from outside: a lost lease cancels the handler and drops its outcome;
shutdown cancels it and gives the task back. Sync handlers run in the pool through
:class:`~conveyor.worker.sync_runner.SyncRunner`, which tells them to stop through
``ctx.cancelled`` and abandons one that has not returned after the grace.

A workflow step's settlement may hand back the chain's next step already leased (an eager
continuation, see :mod:`conveyor.brokers.workflows`): it runs next in the same asyncio task and
slot, as if claimed, with no claim, no read of its input and no wake-up.

The attempt's state and shared helpers live in :mod:`conveyor.worker.attempt`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

from conveyor.brokers.protocol import Broker
from conveyor.brokers.workflows import Continuation, StepOutcome
from conveyor.errors import ConveyorError, PayloadTooLargeError
from conveyor.message import Completion, JSONValue, Lease, Task, to_datetime
from conveyor.middleware import AsyncHandler
from conveyor.signals import Signals
from conveyor.worker.attempt import (
    CANCELLED_ERROR,
    Attempt,
    Interrupt,
    Phase,
    error_text,
    fast_decode,
    limit_error,
    log_extra,
)
from conveyor.worker.completer import Completer
from conveyor.worker.config import WorkerConfig
from conveyor.worker.context import TaskContext, activate
from conveyor.worker.crashpoints import crashpoint
from conveyor.worker.deadlines import DeadlineSweep
from conveyor.worker.heartbeat import LeaseRegistry
from conveyor.worker.outcomes import Outcomes
from conveyor.worker.pool import HandlerThreadPool
from conveyor.worker.stats import WorkerStats
from conveyor.worker.sync_runner import SyncRunner
from conveyor.worker.workflow_steps import StepRunner

# Re-exported: imported from here by other modules and by tests.
__all__ = [
    "CANCELLED_ERROR",
    "Attempt",
    "Executor",
    "Interrupt",
    "Phase",
    "continue_on",
    "error_text",
]

logger = logging.getLogger(__name__)


class Executor:
    """Runs attempts, at most ``config.concurrency`` at once; their outcomes go to Outcomes.

    Args:
        broker: the server's broker.
        handler: the (composed) async handler every task goes through.
        config: the server's options.
        registry: held leases; attempts add theirs and remove them once settled.
        completer: where successful attempts go.
        pool: the thread pool for sync handlers.
        stats: the server's counters.
        on_slot_freed: called whenever an attempt ends (the fetcher may claim again).
        signals: where lifecycle events are sent (started, failed, retried, archived; the
            completer's results become succeeded through :meth:`completed`).
        can_continue: whether a settling workflow step may ask for an eager continuation now
            (the worker is fetching: neither paused nor stopping); ``None``: never.
    """

    def __init__(
        self,
        broker: Broker,
        handler: AsyncHandler,
        *,
        config: WorkerConfig,
        registry: LeaseRegistry,
        completer: Completer,
        pool: HandlerThreadPool,
        stats: WorkerStats,
        on_slot_freed: Callable[[], None],
        signals: Signals | None = None,
        can_continue: Callable[[], bool] | None = None,
    ) -> None:
        self._broker = broker
        self._shutting_down = False
        self._signals = Signals() if signals is None else signals
        self._handler = handler
        self._config = config
        self._registry = registry
        self._completer = completer
        self._stats = stats
        self._on_slot_freed = on_slot_freed
        self._running: dict[tuple[str, str, int], Attempt] = {}
        self._deadlines: DeadlineSweep[Attempt] = DeadlineSweep(self._expired)
        self._steps = StepRunner(broker)
        self._run_sync = SyncRunner(pool, stats, config.sync_cancel_grace_s).run
        outcomes = Outcomes(
            broker,
            config=config,
            registry=registry,
            completer=completer,
            stats=stats,
            signals=self._signals,
            steps=self._steps,
            continue_on=continue_on(config),
            can_continue=can_continue,
            on_continued=self._continued,
        )
        #: The completer's report on a success: signals it when the broker accepted it.
        self.completed: Callable[[Completion, bool], None] = outcomes.completed
        # Bound once, not looked up through ``outcomes`` per attempt on the hot path.
        self._succeed = outcomes.succeed
        self._fail = outcomes.fail
        self._archive = outcomes.archive
        self._interrupted = outcomes.interrupted
        self._settle = outcomes.settle
        self._failed = outcomes.failed
        self._report_error = outcomes.report_error
        self._emit = outcomes.emit

    def free_slots(self) -> int:
        """How many more attempts may start now."""
        return self._config.concurrency - len(self._running)

    @property
    def running(self) -> int:
        """Attempts not yet ended (in their handler or recording an outcome)."""
        return len(self._running)

    def dispatch(self, lease: Lease) -> None:
        """Start the attempt for a freshly claimed lease."""
        key, attempt = self._register(lease)
        attempt.task = asyncio.create_task(self._run(key, attempt))

    def _register(self, lease: Lease) -> tuple[tuple[str, str, int], Attempt]:
        """A new attempt for ``lease``, held (renewed) and counted as running."""
        info = lease.task
        ctx = TaskContext(
            task_id=info.id,
            queue=info.queue,
            type=info.type,
            retry_count=info.retried,
            max_retry=info.max_retry,
            deadline=info.deadline,
            claimed_at=to_datetime(lease.expires_at - self._config.lease_s),
            run_sync=self._run_sync,
            lease=lease,
            broker=self._broker,
        )
        attempt = Attempt(lease=lease, ctx=ctx)
        key = self._registry.key(lease)
        self._registry.add(lease)
        self._running[key] = attempt
        self._stats.claimed += 1
        return key, attempt

    def _continued(self, attempt: Attempt, continued: Continuation) -> None:
        """Hold the step the settlement of ``attempt`` leased; it runs next in the same task."""
        key, nxt = self._register(continued.lease)
        nxt.continued, nxt.task = continued, attempt.task
        self._stats.continued += 1
        if self._shutting_down:  # shutdown interrupted the others already: give it back too
            nxt.interrupt = Interrupt.SHUTDOWN
        attempt.next = (key, nxt)

    def lease_lost(self, leases: list[Lease]) -> None:
        """Interrupt the attempts whose lease renewal was refused: cancel, never report."""
        for lease in leases:
            attempt = self._running.get(self._registry.key(lease))
            # An attempt already recording its outcome learns of the loss from that call.
            if attempt is None or attempt.interrupt is not None or attempt.phase is Phase.SETTLING:
                continue
            self._stats.lease_lost += 1
            self._interrupt(attempt, Interrupt.LEASE_LOST)

    def cancel(self, leases: list[Lease]) -> None:
        """Cancel the attempts the inspector asked to stop: their tasks end ARCHIVED, "cancelled".

        An async handler is cancelled at once (it sees ``CancelledError``); a sync handler's
        thread cannot be stopped: its ``ctx.cancelled`` is set, and it is abandoned if it has not
        returned ``config.sync_cancel_grace_s`` later (its outcome is ignored either way). An
        attempt already recording its outcome finishes as it was.
        """
        for lease in leases:
            attempt = self._running.get(self._registry.key(lease))
            if attempt is None or attempt.interrupt is not None or attempt.phase is Phase.SETTLING:
                continue
            logger.warning("cancelling task %s on request", lease.task.id, extra=log_extra(lease))
            self._interrupt(attempt, Interrupt.CANCELLED)

    def interrupt_all(self) -> int:
        """Interrupt every attempt not yet recording its outcome (shutdown); return how many."""
        self._shutting_down = True
        count = 0
        for attempt in list(self._running.values()):
            if attempt.interrupt is None and attempt.phase is not Phase.SETTLING:
                self._interrupt(attempt, Interrupt.SHUTDOWN)
                count += 1
        return count

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every attempt to end; return whether they all did."""
        deadline = time.monotonic() + timeout_s
        while self._running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            tasks = {a.task for a in self._running.values() if a.task is not None}
            await asyncio.wait(tasks, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        return True

    async def cancel_remaining(self) -> None:
        """Last resort at shutdown: cancel attempts that ignored every request to end.

        Their leases are left to lapse, so the tasks are recovered and run again.
        """
        stuck = [a for a in self._running.values() if a.task is not None]
        for attempt in stuck:
            logger.error(
                "task %s did not end at shutdown; it will run again after its lease expires",
                attempt.lease.task.id,
                extra=log_extra(attempt.lease),
            )
            self._registry.discard(attempt.lease)
            assert attempt.task is not None
            attempt.task.cancel()
        if stuck:
            await asyncio.wait({a.task for a in stuck if a.task is not None}, timeout=1.0)

    def close(self) -> None:
        """Stop the deadline timer (after the last attempt ended)."""
        self._deadlines.close()

    # -- one attempt ---------------------------------------------------------------------------

    async def _run(self, key: tuple[str, str, int], attempt: Attempt) -> None:
        # Only attempts past their first step are ever cancelled (see _interrupt), so this
        # try/finally always runs: no done-callback per task is needed for the bookkeeping.
        # An eager continuation runs next in this same task and slot.
        try:
            while True:
                try:
                    await self._attempt(attempt)
                except BaseException as exc:
                    # The attempt died without recording an outcome: stop renewing so the
                    # lease lapses and the task is recovered, rather than held for ever; the
                    # same for a continuation it was handed.
                    self._registry.discard(attempt.lease)
                    if attempt.next is not None:
                        self._registry.discard(attempt.next[1].lease)
                        del self._running[attempt.next[0]]
                    if not isinstance(exc, asyncio.CancelledError):
                        logger.error(
                            "attempt of task %s crashed",
                            attempt.lease.task.id,
                            exc_info=exc,
                            extra=log_extra(attempt.lease),
                        )
                    raise
                finally:
                    del self._running[key]
                if attempt.next is None:
                    return
                key, attempt = attempt.next
        finally:
            self._on_slot_freed()

    async def _attempt(self, attempt: Attempt) -> None:
        if attempt.interrupt is not None:  # interrupted before it started
            await self._interrupted(attempt)
            return
        task = await self._decode(attempt)
        if task is None:
            return
        ready: bool | StepOutcome
        if attempt.continued is not None:  # its input came with its lease
            self._steps.prepare_continued(attempt.continued, attempt.ctx)
            ready = True
        else:
            ready = not self._steps.is_step(attempt.lease) or await self._steps.prepare(
                attempt.lease, attempt.ctx
            )
        if ready is not True:
            attempt.phase = Phase.SETTLING
            if ready is False:
                # Its workflow was cancelled before it started: end the task without running it.
                self._completer.add(Completion(lease=attempt.lease))
            else:  # the step was recorded already: finish its settlement, run nothing
                await self._settle(attempt.lease, partial(self._steps.settle, attempt.lease, ready))
            return
        activate(attempt.ctx)
        info = attempt.lease.task
        limit, by_deadline = self._time_limit(info.timeout, info.deadline)
        if limit is not None and limit <= 0:
            await self._fail(attempt, task, limit_error(limit, by_deadline))
            return
        crashpoint("before_handler")
        ok, value = await self._invoke(attempt, task, limit, by_deadline)
        crashpoint("after_handler")
        attempt.phase = Phase.SETTLING
        if attempt.interrupt is not None:
            # We cancelled this task ourselves (whether or not the handler swallowed it): clear
            # the request so timeouts in the broker calls below are not mistaken for it.
            current = asyncio.current_task()
            while current is not None and current.cancelling():
                current.uncancel()
            await self._interrupted(attempt)
        elif ok:
            await self._succeed(attempt, task, value)
        else:
            await self._fail(attempt, task, value)

    async def _invoke(
        self, attempt: Attempt, task: Task, limit: float | None, by_deadline: bool
    ) -> tuple[bool, JSONValue]:
        """Run the handler; return ``(True, result)`` or ``(False, exception)``.

        The time limit is watched by the executor's one deadline sweep, which cancels the
        attempt when it passes (see :meth:`_expired`); the handler sees a CancelledError, as
        under ``asyncio.timeout``, and the attempt fails with a TimeoutError.
        """
        attempt.phase = Phase.RUNNING
        self._emit(self._signals.task_started, attempt.lease)
        watch = None if limit is None else self._deadlines.watch(attempt, limit)
        started = time.perf_counter()
        try:
            return True, await self._handler(attempt.ctx, task)
        except asyncio.CancelledError as exc:
            if attempt.interrupt is not None:
                return False, exc
            if attempt.timed_out:
                assert limit is not None
                return False, limit_error(limit, by_deadline)
            raise  # not ours (the loop is being torn down): let it propagate
        except Exception as exc:
            return False, exc
        finally:
            attempt.duration_s = time.perf_counter() - started
            if watch is not None:
                self._deadlines.forget(watch)
            if attempt.timed_out and attempt.interrupt is None:
                # The sweep's cancel was delivered (or swallowed by the handler): clear it, so
                # the broker calls recording the outcome are not cancelled too.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    current.uncancel()

    def _expired(self, attempt: Attempt) -> None:
        """The deadline sweep's call: the attempt's time limit passed while its handler ran."""
        if attempt.phase is not Phase.RUNNING or attempt.interrupt is not None:
            return
        attempt.timed_out = True
        attempt.ctx.cancel()
        if attempt.task is not None:
            attempt.task.cancel()

    def _time_limit(
        self, timeout: timedelta | None, deadline: datetime | None
    ) -> tuple[float | None, bool]:
        """Seconds this attempt may run (``None``: no limit), and whether the deadline sets it."""
        limit = None if timeout is None else timeout.total_seconds()
        if deadline is not None:
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if limit is None or remaining < limit:
                return remaining, True
        return limit, False

    async def _decode(self, attempt: Attempt) -> Task | None:
        """The task to hand to the handler, or ``None`` after archiving an unreadable one."""
        info = attempt.lease.task
        size, cap = len(info.raw_payload), self._config.max_payload_bytes
        error: Exception
        if size > cap:
            # Check the length before decoding: a huge payload must not cost a huge parse.
            error = PayloadTooLargeError(size=size, limit=cap)
        else:
            try:
                payload = fast_decode(info.raw_payload, info.encoding)
                if info.raw_headers is None:
                    return Task(info.type, payload)
                return Task(info.type, payload, info.headers)
            except (ConveyorError, ValueError, TypeError) as exc:
                error = exc
        attempt.phase = Phase.SETTLING
        self._failed(attempt, error_text(error))
        # The error handler still hears of it; it gets the stored bytes, as they could not be read.
        await self._report_error(attempt.ctx, Task(info.type, info.raw_payload), error)
        await self._archive(attempt, error_text(error))
        return None

    # -- plumbing ------------------------------------------------------------------------------

    def _interrupt(self, attempt: Attempt, why: Interrupt) -> None:
        attempt.interrupt = why
        attempt.ctx.cancel()
        if attempt.phase is Phase.RUNNING and attempt.task is not None:
            attempt.task.cancel()


def continue_on(config: WorkerConfig) -> frozenset[str]:
    """The queues a settled chain step may be continued on by this worker: every queue it
    serves, or with strict priority only its highest-priority ones (a continuation skips the
    claim's order, so it must never pass over a heavier queue's work)."""
    if not config.strict_priority:
        return frozenset(name for name, _ in config.queues)
    top = max(weight for _, weight in config.queues)
    return frozenset(name for name, weight in config.queues if weight == top)
