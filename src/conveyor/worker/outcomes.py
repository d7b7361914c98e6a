"""Recording the outcome of an attempt: success, failure with retry, archive, release.

A success goes to the :class:`~conveyor.worker.completer.Completer` (batched); a workflow step's
is settled directly, and that settlement may hand back the chain's next step already leased (an
eager continuation), passed to the executor to run next. A failure is retried after the
configured delay or, past its retries, archived. An interrupted attempt is dropped (lease lost),
archived (cancelled) or given back (shutdown). Every broker call goes through :meth:`settle`,
which retries while the broker is down, up to the lease's length, and then stops holding the
lease. Lifecycle signals are emitted here, and the error handler hears of every failure.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from conveyor.backoff import ReconnectBackoff
from conveyor.brokers.protocol import Broker
from conveyor.brokers.workflows import Continuation, StepOutcome
from conveyor.errors import BrokerUnavailableError, ConveyorError, LeaseLostError, Retry, SkipRetry
from conveyor.message import Completion, JSONValue, Lease, Task, encode_json
from conveyor.signals import Signal, Signals, TaskEvent
from conveyor.worker.attempt import (
    CANCELLED_ERROR,
    Attempt,
    Interrupt,
    Phase,
    error_text,
    log_extra,
)
from conveyor.worker.completer import Completer
from conveyor.worker.config import WorkerConfig
from conveyor.worker.context import TaskContext
from conveyor.worker.crashpoints import crashpoint
from conveyor.worker.heartbeat import LeaseRegistry
from conveyor.worker.stats import WorkerStats
from conveyor.worker.workflow_steps import StepRunner

# The executor's logger: its records keep the name logging configurations already know.
logger = logging.getLogger("conveyor.worker.executor")


class Outcomes:
    """Records attempts' outcomes with the broker (or the completer) and signals them.

    Args:
        broker: the server's broker.
        config: the server's options.
        registry: held leases; a settled attempt's lease is removed.
        completer: where successes go.
        stats: the server's counters.
        signals: where lifecycle events are sent.
        steps: the workflow steps' runner.
        continue_on: the queues a settled chain step may be continued on.
        can_continue: whether a settling step may ask for an eager continuation now.
        on_continued: called with the settled attempt and the continuation it leased.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        config: WorkerConfig,
        registry: LeaseRegistry,
        completer: Completer,
        stats: WorkerStats,
        signals: Signals,
        steps: StepRunner,
        continue_on: frozenset[str],
        can_continue: Callable[[], bool] | None,
        on_continued: Callable[[Attempt, Continuation], None],
    ) -> None:
        self._broker = broker
        self._config = config
        self._registry = registry
        self._completer = completer
        self._stats = stats
        self._signals = signals
        self._steps = steps
        self._continue_on = continue_on
        self._can_continue = can_continue
        self._on_continued = on_continued
        # Handler durations of successes handed to the completer, until it reports on them.
        self._durations: dict[tuple[str, str, int], float | None] = {}

    def completed(self, completion: Completion, ok: bool) -> None:
        """The completer's report on a success: signals it when the broker accepted it."""
        lease = completion.lease
        duration = self._durations.pop(self._registry.key(lease), None)
        if ok:
            self.emit(self._signals.task_succeeded, lease, duration_s=duration)

    async def succeed(self, attempt: Attempt, task: Task, result: JSONValue) -> None:
        """Record a handler's result (through the completer, or settling a workflow step)."""
        info = attempt.lease.task
        raw: bytes | None = None
        if attempt.continued is not None or self._steps.is_step(attempt.lease):
            await self._settle_step(attempt, task, result)
            return
        if info.retention > timedelta(0):  # a result is stored only when it is retained
            try:
                raw = encode_json(result, what="result")
            except ConveyorError as exc:
                await self.fail(attempt, task, exc)
                return
        if self._signals.task_succeeded.receivers:
            self._durations[self._registry.key(attempt.lease)] = attempt.duration_s
        self._completer.add(Completion(lease=attempt.lease, result=raw))

    async def fail(self, attempt: Attempt, task: Task, exc: BaseException) -> None:
        """Record a failed attempt: retried after its delay, or archived past its retries."""
        attempt.phase = Phase.SETTLING
        error = error_text(exc)
        self.failed(attempt, error)
        await self.report_error(attempt.ctx, task, exc)
        info = attempt.lease.task
        past_deadline = info.deadline is not None and info.deadline <= datetime.now(UTC)
        if isinstance(exc, SkipRetry) or past_deadline or info.retried + 1 > info.max_retry:
            await self.archive(attempt, error)
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
            extra=log_extra(attempt.lease),
        )
        lease = attempt.lease
        crashpoint("before_retry")
        if await self.settle(
            lease, lambda: self._broker.retry(lease, error=error, delay_s=delay_s)
        ):
            self._stats.retried += 1
            self.emit(self._signals.task_retried, lease, error=error)

    async def archive(self, attempt: Attempt, error: str) -> None:
        """Archive the attempt's task (a workflow step also fails its workflow)."""
        lease = attempt.lease
        logger.error("task %s archived: %s", lease.task.id, error, extra=log_extra(lease))
        if self._steps.is_step(lease):
            # A workflow step: archived, its workflow failed and its error callbacks enqueued
            # in one broker step.
            failure = StepOutcome(succeeded=False, error=error)
            settled = await self.settle(lease, lambda: self._steps.settle(lease, failure))
        else:
            settled = await self.settle(lease, lambda: self._broker.archive(lease, error=error))
        if settled:
            self._stats.archived += 1
            self.emit(self._signals.task_archived, lease, error=error)

    async def _settle_step(self, attempt: Attempt, task: Task, result: JSONValue) -> None:
        try:
            raw = encode_json(result, what="result")
        except ConveyorError as exc:
            await self.fail(attempt, task, exc)
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
                self._on_continued(attempt, continued)
            crashpoint("after_ack")

        if await self.settle(lease, settle):
            self._stats.succeeded += 1

    async def interrupted(self, attempt: Attempt) -> None:
        """Record an attempt stopped from outside: dropped, archived or given back."""
        lease = attempt.lease
        if attempt.interrupt is Interrupt.LEASE_LOST:
            self._registry.discard(lease)
            logger.warning(
                "lease on task %s lost: handler cancelled, outcome ignored",
                lease.task.id,
                extra=log_extra(lease),
            )
            return
        if attempt.interrupt is Interrupt.CANCELLED:
            self.failed(attempt, CANCELLED_ERROR)
            await self.archive(attempt, CANCELLED_ERROR)
            return
        if await self.settle(lease, lambda: self._broker.release(lease)):
            self._stats.released += 1
            logger.info("task %s released at shutdown", lease.task.id, extra=log_extra(lease))

    async def report_error(self, ctx: TaskContext, task: Task, exc: BaseException) -> None:
        """Tell the configured error handler of a failure; its own errors are logged."""
        handler = self._config.error_handler
        if handler is None:
            return
        try:
            outcome = handler(ctx, task, exc)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            logger.exception("error_handler raised for task %s", ctx.task_id)

    async def settle(self, lease: Lease, call: Callable[[], Awaitable[object]]) -> bool:
        """Record an outcome; a lost lease or a broker down past the lease returns ``False``."""
        backoff: ReconnectBackoff | None = None  # made on the first failure only
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
                        extra=log_extra(lease),
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
                            extra=log_extra(lease),
                        )
                        return False
                    if backoff is None:
                        backoff = ReconnectBackoff(cap_s=1.0)
                    await asyncio.sleep(backoff.next_delay())
                except Exception:
                    self._stats.broker_errors += 1
                    logger.exception(
                        "could not record the outcome of task %s",
                        lease.task.id,
                        extra=log_extra(lease),
                    )
                    return False
        finally:
            self._registry.discard(lease)

    def failed(self, attempt: Attempt, error: str) -> None:
        """Count a failed attempt and signal it (before its fate is recorded)."""
        self._stats.failed += 1
        self.emit(
            self._signals.task_failed, attempt.lease, duration_s=attempt.duration_s, error=error
        )

    @staticmethod
    def emit(
        signal: Signal, lease: Lease, *, duration_s: float | None = None, error: str | None = None
    ) -> None:
        """Send ``signal``'s event for ``lease``'s task, if anyone listens."""
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
