"""Fetcher: picks the queue order for each claim, claims in batches, and idles without polling.

Each claim asks for as many tasks as there are free slots, so one broker call can start hundreds of
tasks. When nothing is ready the fetcher awaits ``broker.wait_for_tasks`` (woken within
milliseconds by a new task) instead of sleeping, bounded by ``poll_interval_s`` in case a wake-up
is missed. A broker with ``wait_and_claim`` (Redis) claims in the same step as the wake-up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from conveyor.backoff import ReconnectBackoff
from conveyor.brokers.protocol import Broker, WaitAndClaim
from conveyor.errors import BrokerUnavailableError
from conveyor.message import Lease
from conveyor.worker.crashpoints import crashpoint
from conveyor.worker.executor import Executor
from conveyor.worker.stats import WorkerStats

logger = logging.getLogger(__name__)


class QueueSelector:
    """Orders queue names for each claim, by weight.

    Weighted (the default): a weighted random order without replacement, so over many claims each
    queue comes first in proportion to its weight, and a lighter queue still gets its turn when
    the heavier ones are empty. Strict: heaviest first, always (ties keep the given order), so a
    lighter queue runs only when every heavier one is empty.

    Args:
        queues: ``(name, weight)`` pairs.
        strict: use strict priority.
        rng: random source; seed it for reproducible orders.
    """

    def __init__(
        self,
        queues: Sequence[tuple[str, int]],
        *,
        strict: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self._queues = list(queues)
        self._strict = strict
        self._rng = rng or random.Random()
        ranked = sorted(range(len(self._queues)), key=lambda i: -self._queues[i][1])
        self._strict_order = [self._queues[i][0] for i in ranked]
        self._names = [name for name, _ in self._queues]
        self._uniform = len({weight for _, weight in self._queues}) == 1

    @property
    def names(self) -> list[str]:
        """Every queue name, in the order given."""
        return list(self._names)

    def order(self) -> list[str]:
        """The queue order for the next claim."""
        if self._strict:
            return self._strict_order
        if len(self._queues) == 1:
            return self._names
        if self._uniform:
            order = list(self._names)
            self._rng.shuffle(order)
            return order
        # Efraimidis-Spirakis: sorting by U ** (1 / w) draws a weighted order without replacement.
        keyed = [(self._rng.random() ** (1.0 / weight), name) for name, weight in self._queues]
        keyed.sort(reverse=True)
        return [name for _, name in keyed]


SKEW_WARNING_S = 1.0
"""Warn when this machine's clock and the broker's differ by more than this."""
_SKEW_REPEAT_S = 600.0  # at most one warning per ten minutes


class SkewWatch:
    """Estimates the broker clock's offset from each claim's lease expiry, and warns about it.

    A lease expires ``lease_s`` after the broker's clock read during the claim, so the broker's
    "now" lies inside the call; compared with the call's midpoint on the local clock it gives
    the offset, give or take half the round trip. Leases, due times and recovery never use the
    local clock, but task deadlines and what people read in logs do.
    """

    def __init__(self, lease_s: float) -> None:
        self._lease_s = lease_s
        self._warned_at = float("-inf")

    def observe(self, expires_at: float, sent: float, received: float) -> float | None:
        """Check one claim (local wall-clock times around it); return the offset if warned."""
        offset = (expires_at - self._lease_s) - (sent + received) / 2
        if abs(offset) <= SKEW_WARNING_S + (received - sent) / 2:
            return None
        now = time.monotonic()
        if now - self._warned_at < _SKEW_REPEAT_S:
            return None
        self._warned_at = now
        logger.warning(
            "this machine's clock is %+.1fs off the broker's: task deadlines are checked "
            "against the local clock; fix the time sync (NTP)",
            -offset,
        )
        return offset


class Fetcher:
    """The claim loop: claim while there are free slots, wait for tasks when there are none.

    Args:
        broker: the server's broker.
        executor: runs what is claimed and reports free slots.
        selector: the queue order per claim.
        lease_s: lease length of each claim.
        poll_interval_s: longest idle wait before claiming again.
        stats: the server's counters.
        on_ready: called once, just before the first claim.
    """

    def __init__(
        self,
        broker: Broker,
        executor: Executor,
        selector: QueueSelector,
        *,
        lease_s: float,
        poll_interval_s: float,
        stats: WorkerStats,
        on_ready: Callable[[], None],
    ) -> None:
        self._broker = broker
        self._executor = executor
        self._selector = selector
        self._lease_s = lease_s
        self._poll_interval_s = poll_interval_s
        self._stats = stats
        self._on_ready = on_ready
        self._wake = asyncio.Event()
        self._stopping = False
        self._paused = False
        self._idle_wait: asyncio.Task[list[Lease] | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._skew = SkewWatch(lease_s)
        self._wait_and_claim = broker if isinstance(broker, WaitAndClaim) else None

    def start(self) -> None:
        """Start claiming on the running event loop."""
        self._task = asyncio.create_task(self._run(), name="conveyor-fetcher")

    @property
    def active(self) -> bool:
        """Whether the fetcher is claiming (started, neither paused nor stopping)."""
        return self._task is not None and not (self._paused or self._stopping)

    def wake(self) -> None:
        """Tell the fetcher a slot may have freed up."""
        self._wake.set()

    def pause(self) -> None:
        """Stop claiming; running tasks carry on (SIGTSTP)."""
        if not self._paused:
            self._paused = True
            logger.info("stopped fetching new tasks; running tasks continue")
        self._interrupt_idle_wait()

    async def stop(self, *, timeout_s: float) -> None:
        """Stop claiming and wait for the loop to end.

        A claim in flight is let finish (its tasks then run and are waited for like the others),
        unless it hangs past ``timeout_s``: then it is cut, and whatever it claimed comes back
        when the leases lapse.
        """
        self._stopping = True
        self._interrupt_idle_wait()
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            logger.warning("a claim hung during shutdown; cancelled it")
            task.cancel()
            await asyncio.wait({task})

    def _interrupt_idle_wait(self) -> None:
        self._wake.set()
        # Cancelling the idle wait is safe; a claim in flight is never cancelled, since a claim
        # whose reply is lost would leave its tasks active until their leases lapse.
        if self._idle_wait is not None:
            self._idle_wait.cancel()

    async def _run(self) -> None:
        backoff = ReconnectBackoff()
        self._on_ready()
        while not self._stopping:
            free = self._executor.free_slots()
            if self._paused or free <= 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                sent = time.time()
                leases = await self._broker.claim(
                    self._selector.order(), limit=free, lease_s=self._lease_s
                )
            except BrokerUnavailableError as exc:
                delay = backoff.next_delay()
                self._stats.broker_errors += 1
                logger.warning("claim: broker unavailable (%s); retrying in %.2fs", exc, delay)
                await self._idle(delay)
                continue
            except Exception:
                delay = backoff.next_delay()
                self._stats.broker_errors += 1
                logger.exception("claim failed; retrying in %.2fs", delay)
                await self._idle(delay)
                continue
            backoff.reset()
            if not leases:
                sent = time.time()
                leases = await self._idle(None, limit=free)
            if leases:
                self._skew.observe(leases[0].expires_at, sent, time.time())
                crashpoint("after_claim")
            for lease in leases:
                self._executor.dispatch(lease)
            if leases:
                # Let the attempts just dispatched take their first step before this loop
                # builds and sends its next claim: on an idle worker that is most of the time
                # between a task's claim and its start.
                await asyncio.sleep(0)

    async def _idle(self, delay_s: float | None, *, limit: int = 0) -> list[Lease]:
        """Wait for new tasks (``delay_s`` None) or for ``delay_s``; stop and pause cut it short.

        Waiting for tasks on a broker that can claim as the wait ends returns what it claimed
        (up to ``limit``); otherwise the loop claims next.
        """
        if self._stopping or self._paused:
            return []
        coro: Coroutine[Any, Any, list[Lease] | None]
        if delay_s is None and self._wait_and_claim is not None:
            coro = self._wait_and_claim.wait_and_claim(
                self._selector.order(),
                limit=limit,
                lease_s=self._lease_s,
                timeout_s=self._poll_interval_s,
            )
        elif delay_s is None:
            coro = self._broker.wait_for_tasks(self._selector.names, self._poll_interval_s)
        else:
            coro = asyncio.sleep(delay_s)
        self._idle_wait = waited = asyncio.create_task(coro)
        try:
            await asyncio.wait({waited})
        finally:
            self._idle_wait = None
        if waited.cancelled():
            return []
        exc = waited.exception()
        if exc is not None:
            self._stats.broker_errors += 1
            logger.warning("waiting for tasks failed (%s); claiming again", exc)
            # Do not spin on a broker that fails fast: pause before the next claim.
            await asyncio.sleep(0.05)
            return []
        return waited.result() or []
