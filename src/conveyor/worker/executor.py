"""Executor: runs each claimed task's attempt and records its outcome.

One asyncio task per attempt: decode the payload, run the handler under its time limit, then
record the outcome (completion through the :class:`~conveyor.worker.completer.Completer`; retry,
archive or release directly). An attempt can be *interrupted* from outside: a lost lease cancels
the handler and drops its outcome; shutdown cancels it and gives the task back. Sync handlers run
in the pool and are told to stop through ``ctx.cancelled``; one that has not returned
``SYNC_CANCEL_GRACE_S`` later is abandoned (its thread finishes alone, its outcome is ignored)
and the pool starts a replacement thread.

A workflow step's settlement may hand back the chain's next step already leased (an eager
continuation, see :mod:`conveyor.brokers.workflows`): it runs next in the same asyncio task and
slot, as if claimed, with no claim, no read of its input and no wake-up.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from conveyor.backoff import ReconnectBackoff
from conveyor.brokers.protocol import Broker
from conveyor.brokers.workflows import Continuation, StepOutcome
from conveyor.errors import (
    BrokerUnavailableError,
    ConveyorError,
    LeaseLostError,
    PayloadTooLargeError,
    Retry,
    SkipRetry,
)
from conveyor.message import (
    Completion,
    Encoding,
    JSONValue,
    Lease,
    Payload,
    Task,
    decode_payload,
    encode_json,
    to_datetime,
)
from conveyor.middleware import AsyncHandler, SyncHandler
from conveyor.signals import Signal, Signals, TaskEvent
from conveyor.worker.completer import Completer
from conveyor.worker.config import WorkerConfig
from conveyor.worker.context import TaskContext, activate
from conveyor.worker.crashpoints import crashpoint
from conveyor.worker.deadlines import DeadlineSweep
from conveyor.worker.heartbeat import LeaseRegistry
from conveyor.worker.pool import HandlerThreadPool
from conveyor.worker.stats import WorkerStats
from conveyor.worker.workflow_steps import StepRunner

logger = logging.getLogger(__name__)

# Stored error texts are for people reading the dead set; cap them so one huge message cannot
# bloat the broker.
_MAX_ERROR_CHARS = 4096


class Interrupt(enum.Enum):
    """Why an attempt was stopped from outside."""

    LEASE_LOST = "lease lost"
    SHUTDOWN = "shutdown"
    CANCELLED = "cancelled"  # the inspector's cancel_task: archived, never retried


CANCELLED_ERROR = "cancelled"
"""The error recorded on a task cancelled with ``cancel_task``."""

SYNC_CANCEL_GRACE_S = 1.0
"""How long an interrupted sync handler has to notice ``ctx.cancelled`` and return before its
thread is abandoned (its outcome is ignored either way)."""


class Phase(enum.Enum):
    """Where an attempt is: before its handler, in it, or recording its outcome."""

    STARTING = "starting"
    RUNNING = "running"
    SETTLING = "settling"


@dataclass(slots=True, eq=False)
class Attempt:
    """One claimed task being processed."""

    lease: Lease
    ctx: TaskContext
    task: asyncio.Task[None] | None = None
    phase: Phase = Phase.STARTING
    interrupt: Interrupt | None = None
    timed_out: bool = False  # its time limit passed while the handler ran
    duration_s: float | None = None  # how long the handler ran, once it has returned
    continued: Continuation | None = None  # leased by the previous step's settlement
    # The continuation this attempt's settlement leased: (its key, its attempt), to run next.
    next: tuple[tuple[str, str, int], Attempt] | None = None


def error_text(exc: BaseException) -> str:
    """What is stored as a task's last error: the exception type name and its message."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the failure
        message = ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:_MAX_ERROR_CHARS]


class Executor:
    """Runs attempts, at most ``config.concurrency`` at once, and records their outcomes.

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
        self._can_continue = can_continue
        self._continue_on = continue_on(config)
        self._shutting_down = False
        self._signals = Signals() if signals is None else signals
        # Handler durations of successes handed to the completer, until it reports on them.
        self._durations: dict[tuple[str, str, int], float | None] = {}
        self._handler = handler
        self._config = config
        self._registry = registry
        self._completer = completer
        self._pool = pool
        self._stats = stats
        self._on_slot_freed = on_slot_freed
        self._running: dict[tuple[str, str, int], Attempt] = {}
        self._deadlines: DeadlineSweep[Attempt] = DeadlineSweep(self._expired)
        self._steps = StepRunner(broker)

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
        returned :data:`SYNC_CANCEL_GRACE_S` later (its outcome is ignored either way). An
        attempt already recording its outcome finishes as it was.
        """
        for lease in leases:
            attempt = self._running.get(self._registry.key(lease))
            if attempt is None or attempt.interrupt is not None or attempt.phase is Phase.SETTLING:
                continue
            logger.warning("cancelling task %s on request", lease.task.id, extra=_extra(lease))
            self._interrupt(attempt, Interrupt.CANCELLED)

    def completed(self, completion: Completion, ok: bool) -> None:
        """The completer's report on a success: signals it when the broker accepted it."""
        lease = completion.lease
        duration = self._durations.pop(self._registry.key(lease), None)
        if ok:
            self._emit(self._signals.task_succeeded, lease, duration_s=duration)

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
                extra=_extra(attempt.lease),
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
                            extra=_extra(attempt.lease),
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
            await self._fail(attempt, task, _limit_error(limit, by_deadline))
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
                return False, _limit_error(limit, by_deadline)
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
                payload = _decode(info.raw_payload, info.encoding)
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

    async def _succeed(self, attempt: Attempt, task: Task, result: JSONValue) -> None:
        info = attempt.lease.task
        raw: bytes | None = None
        if self._steps.is_step(attempt.lease):
            await self._settle_step(attempt, task, result)
            return
        if info.retention > timedelta(0):  # a result is stored only when it is retained
            try:
                raw = encode_json(result, what="result")
            except ConveyorError as exc:
                await self._fail(attempt, task, exc)
                return
        if self._signals.task_succeeded.receivers:
            self._durations[self._registry.key(attempt.lease)] = attempt.duration_s
        self._completer.add(Completion(lease=attempt.lease, result=raw))

    async def _fail(self, attempt: Attempt, task: Task, exc: BaseException) -> None:
        attempt.phase = Phase.SETTLING
        error = error_text(exc)
        self._failed(attempt, error)
        await self._report_error(attempt.ctx, task, exc)
        info = attempt.lease.task
        past_deadline = info.deadline is not None and info.deadline <= datetime.now(UTC)
        if isinstance(exc, SkipRetry) or past_deadline or info.retried + 1 > info.max_retry:
            await self._archive(attempt, error)
            return
        if isinstance(exc, Retry) and exc.delay is not None:
            delay = exc.delay
        else:
            delay = self._config.retry_delay(info.retried, exc, task)
        delay_s = max(0.0, delay.total_seconds())
        logger.warning(
            "task %s failed (%s); retry %d of %d in %.1fs",
            info.id,
            error,
            info.retried + 1,
            info.max_retry,
            delay_s,
            extra=_extra(attempt.lease),
        )
        lease = attempt.lease
        crashpoint("before_retry")
        if await self._settle(
            lease, lambda: self._broker.retry(lease, error=error, delay_s=delay_s)
        ):
            self._stats.retried += 1
            self._emit(self._signals.task_retried, lease, error=error)

    async def _archive(self, attempt: Attempt, error: str) -> None:
        lease = attempt.lease
        logger.error("task %s archived: %s", lease.task.id, error, extra=_extra(lease))
        if self._steps.is_step(lease):
            # A workflow step: archived, its workflow failed and its error callbacks enqueued
            # in one broker step.
            failure = StepOutcome(succeeded=False, error=error)
            settled = await self._settle(lease, lambda: self._steps.settle(lease, failure))
        else:
            settled = await self._settle(lease, lambda: self._broker.archive(lease, error=error))
        if settled:
            self._stats.archived += 1
            self._emit(self._signals.task_archived, lease, error=error)

    async def _settle_step(self, attempt: Attempt, task: Task, result: JSONValue) -> None:
        try:
            raw = encode_json(result, what="result")
        except ConveyorError as exc:
            await self._fail(attempt, task, exc)
            return
        lease = attempt.lease
        eager = self._can_continue is not None and self._can_continue()
        success = StepOutcome(
            succeeded=True,
            result=raw,
            continue_on=self._continue_on if eager else frozenset(),
            continue_lease_s=self._config.lease_s,
        )

        async def settle() -> None:
            crashpoint("before_ack")
            continued = await self._steps.settle(lease, success)
            if continued is not None:
                self._continued(attempt, continued)
            crashpoint("after_ack")

        if await self._settle(lease, settle):
            self._stats.succeeded += 1

    async def _interrupted(self, attempt: Attempt) -> None:
        lease = attempt.lease
        if attempt.interrupt is Interrupt.LEASE_LOST:
            self._registry.discard(lease)
            logger.warning(
                "lease on task %s lost: handler cancelled, outcome ignored",
                lease.task.id,
                extra=_extra(lease),
            )
            return
        if attempt.interrupt is Interrupt.CANCELLED:
            self._failed(attempt, CANCELLED_ERROR)
            await self._archive(attempt, CANCELLED_ERROR)
            return
        if await self._settle(lease, lambda: self._broker.release(lease)):
            self._stats.released += 1
            logger.info("task %s released at shutdown", lease.task.id, extra=_extra(lease))

    async def _report_error(self, ctx: TaskContext, task: Task, exc: BaseException) -> None:
        handler = self._config.error_handler
        if handler is None:
            return
        try:
            outcome = handler(ctx, task, exc)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            logger.exception("error_handler raised for task %s", ctx.task_id)

    async def _settle(self, lease: Lease, call: Callable[[], Awaitable[object]]) -> bool:
        """Record an outcome; a lost lease or a broker down past the lease returns ``False``."""
        backoff = ReconnectBackoff(cap_s=1.0)
        give_up_at = time.monotonic() + self._config.lease_s
        try:
            while True:
                try:
                    await call()
                    return True
                except LeaseLostError:
                    self._stats.lease_lost += 1
                    logger.warning(
                        "outcome of task %s refused: its lease was lost",
                        lease.task.id,
                        extra=_extra(lease),
                    )
                    return False
                except BrokerUnavailableError as exc:
                    self._stats.broker_errors += 1
                    if time.monotonic() >= give_up_at:
                        logger.error(
                            "could not record the outcome of task %s (%s); it will be recovered "
                            "after its lease expires",
                            lease.task.id,
                            exc,
                            extra=_extra(lease),
                        )
                        return False
                    await asyncio.sleep(backoff.next_delay())
                except Exception:
                    self._stats.broker_errors += 1
                    logger.exception(
                        "could not record the outcome of task %s",
                        lease.task.id,
                        extra=_extra(lease),
                    )
                    return False
        finally:
            self._registry.discard(lease)

    # -- plumbing ------------------------------------------------------------------------------

    def _failed(self, attempt: Attempt, error: str) -> None:
        """Count a failed attempt and signal it (before its fate is recorded)."""
        self._stats.failed += 1
        self._emit(
            self._signals.task_failed, attempt.lease, duration_s=attempt.duration_s, error=error
        )

    @staticmethod
    def _emit(
        signal: Signal, lease: Lease, *, duration_s: float | None = None, error: str | None = None
    ) -> None:
        if not signal.receivers:  # the common case: build no event nobody reads
            return
        info = lease.task
        signal.send(
            TaskEvent(
                kind=signal.kind,
                task_id=info.id,
                task_type=info.type,
                queue=info.queue,
                attempt=info.retried + 1,
                duration_s=duration_s,
                error=error,
            )
        )

    def _interrupt(self, attempt: Attempt, why: Interrupt) -> None:
        attempt.interrupt = why
        attempt.ctx.cancel()
        if attempt.phase is Phase.RUNNING and attempt.task is not None:
            attempt.task.cancel()

    async def _run_sync(self, fn: SyncHandler, ctx: TaskContext, task: Task) -> JSONValue:
        """Run a sync handler in the pool, with this task's contextvars (current_context).

        Cancelled while the handler runs, it sets ``ctx.cancelled`` and gives the handler
        :data:`SYNC_CANCEL_GRACE_S` to notice and return, so its thread goes back to the pool;
        a handler still running then is abandoned. Either way its outcome is ignored.
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
                await asyncio.wait({run.ended()}, timeout=SYNC_CANCEL_GRACE_S)
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


def continue_on(config: WorkerConfig) -> frozenset[str]:
    """The queues a settled chain step may be continued on by this worker: every queue it
    serves, or with strict priority only its highest-priority ones (a continuation skips the
    claim's order, so it must never pass over a heavier queue's work)."""
    if not config.strict_priority:
        return frozenset(name for name, _ in config.queues)
    top = max(weight for _, weight in config.queues)
    return frozenset(name for name, weight in config.queues if weight == top)


def _limit_error(limit: float, by_deadline: bool) -> TimeoutError:
    """The failure recorded for an attempt cut by its time limit (built only when one is)."""
    return TimeoutError("deadline exceeded" if by_deadline else f"task timed out after {limit:g}s")


_json_decode = json.JSONDecoder().decode


def _decode(raw: bytes, encoding: Encoding) -> Payload:
    """``decode_payload``, faster on the hot path: decoding str skips encoding sniffing."""
    if encoding is Encoding.BYTES:
        return raw
    try:
        return _json_decode(raw.decode())
    except (ValueError, RecursionError):
        return decode_payload(raw, encoding)  # raises the PayloadError with its usual message


def _extra(lease: Lease) -> dict[str, str]:
    return {"task_id": lease.task.id, "queue": lease.task.queue}
