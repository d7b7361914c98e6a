"""Completer: records successful attempts in batches, so one ``complete`` call covers many tasks.

A completion waits at most ``linger_s`` (1 ms by default) for others to share its broker call, or
less when the batch fills. One flush runs at a time; completions arriving meanwhile form the next
batch, so under load batches grow by themselves and the broker sees few, large calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from conveyor.backoff import ReconnectBackoff
from conveyor.brokers.protocol import Broker
from conveyor.errors import BrokerUnavailableError
from conveyor.message import Completion
from conveyor.worker.crashpoints import crashpoint
from conveyor.worker.heartbeat import LeaseRegistry
from conveyor.worker.stats import WorkerStats

logger = logging.getLogger(__name__)


class Completer:
    """Batches completions and records them with ``broker.complete``.

    Args:
        broker: the server's broker.
        registry: held leases; a lease leaves it once its completion is recorded (or refused).
        stats: the server's counters.
        batch_size: most completions per call.
        linger_s: how long a lone completion waits for company.
        give_up_s: how long to retry a batch while the broker is unreachable; past that the
            leases lapse anyway and the tasks will be recovered and run again.
        on_completed: called with each completion once its batch is done, and whether the
            broker recorded it (``False``: its lease was lost, or it could not be recorded).
    """

    def __init__(
        self,
        broker: Broker,
        *,
        registry: LeaseRegistry,
        stats: WorkerStats,
        batch_size: int,
        linger_s: float,
        give_up_s: float,
        on_completed: Callable[[Completion, bool], None] | None = None,
    ) -> None:
        self._broker = broker
        self._on_completed = on_completed
        self._registry = registry
        self._stats = stats
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._give_up_s = give_up_s
        self._pending: list[Completion] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the flush loop on the running event loop."""
        self._task = asyncio.create_task(self._run(), name="conveyor-completer")

    def add(self, completion: Completion) -> None:
        """Queue a completion for the next flush."""
        self._pending.append(completion)
        self._wake.set()

    async def stop(self, *, timeout_s: float) -> None:
        """Flush what is queued (retrying for at most ``timeout_s``), then stop."""
        self._stopping = True
        self._give_up_s = min(self._give_up_s, timeout_s)
        self._wake.set()
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout_s + 1.0)
        if not done:
            task.cancel()
            await asyncio.wait({task})
        if self._pending:
            logger.error(
                "%d completions could not be recorded; their tasks will run again after their "
                "lease expires",
                len(self._pending),
            )

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._pending) < self._batch_size and self._linger_s > 0 and not self._stopping:
                await asyncio.sleep(self._linger_s)
            batch = self._pending[: self._batch_size]
            del self._pending[: self._batch_size]
            await self._flush(batch)

    async def _flush(self, batch: list[Completion]) -> None:
        backoff = ReconnectBackoff(cap_s=1.0)
        give_up_at = time.monotonic() + self._give_up_s
        answered = False
        try:
            while True:
                try:
                    crashpoint("before_ack")
                    held = await self._broker.complete(batch)
                    crashpoint("after_ack")
                except BrokerUnavailableError as exc:
                    self._stats.broker_errors += 1
                    if time.monotonic() >= give_up_at:
                        logger.error(
                            "could not record %d completions (%s); their tasks will run again "
                            "after their lease expires",
                            len(batch),
                            exc,
                        )
                        return
                    delay = backoff.next_delay()
                    logger.warning(
                        "complete: broker unavailable (%s); retrying in %.2fs", exc, delay
                    )
                    await asyncio.sleep(delay)
                except Exception:
                    self._stats.broker_errors += 1
                    if len(batch) > 1:
                        # One bad completion (a successor that conflicts) must not sink the rest:
                        # the broker applied those before it, so retry them one at a time.
                        for completion in batch:
                            await self._flush([completion])
                        return
                    logger.exception(
                        "could not record the completion of task %s; it will run again after "
                        "its lease expires",
                        batch[0].lease.task.id,
                        extra=_extra(batch[0]),
                    )
                    return
                else:
                    answered = True
                    self._account(batch, held)
                    return
        finally:
            for completion in batch:
                self._registry.discard(completion.lease)
                if not answered and self._on_completed is not None:
                    self._on_completed(completion, False)  # not recorded: no success to report

    def _account(self, batch: list[Completion], held: list[bool]) -> None:
        debug = logger.isEnabledFor(logging.DEBUG)
        for completion, ok in zip(batch, held, strict=True):
            if self._on_completed is not None:
                self._on_completed(completion, ok)
            if ok:
                self._stats.succeeded += 1
                if debug:
                    logger.debug(
                        "task %s completed", completion.lease.task.id, extra=_extra(completion)
                    )
            else:
                self._stats.lease_lost += 1
                logger.warning(
                    "completion of task %s refused: its lease was lost (another worker may have "
                    "run it)",
                    completion.lease.task.id,
                    extra=_extra(completion),
                )


def _extra(completion: Completion) -> dict[str, str]:
    return {"task_id": completion.lease.task.id, "queue": completion.lease.task.queue}
