"""PeriodicLoop: the shape every background loop of the worker shares.

Run a body now and then every interval; on a broker outage log, back off and carry on. A loop of
the worker must never exit or go idle for good because the broker blinked (Celery #8030, #9054).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from conveyor.backoff import ReconnectBackoff
from conveyor.errors import BrokerUnavailableError

logger = logging.getLogger(__name__)


class PeriodicLoop:
    """Calls ``body()`` at start and then every ``interval_s`` seconds until stopped.

    Args:
        name: used in logs and as the asyncio task name.
        interval_s: pause between the end of one call and the start of the next.
        body: the work; ``BrokerUnavailableError`` and other exceptions are logged and retried
            after a backoff, never propagated.
        on_error: called once per failed call (the server counts broker errors with it).
    """

    def __init__(
        self,
        name: str,
        interval_s: float,
        body: Callable[[], Awaitable[None]],
        *,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._interval_s = interval_s
        self._body = body
        self._on_error = on_error
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"conveyor-{self.name}")

    def request_stop(self) -> None:
        """Ask the loop to stop after its current call (call on the loop's thread)."""
        if self._stopping is not None:
            self._stopping.set()

    async def stop(self, *, grace_s: float = 1.0) -> None:
        """Stop the loop, cancelling a call still running after ``grace_s`` seconds."""
        self.request_stop()
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=grace_s)
        if not done:
            # A call hanging on a dead broker: safe to cut, every body is idempotent.
            task.cancel()
            await asyncio.wait({task})

    async def _run(self) -> None:
        assert self._stopping is not None
        backoff = ReconnectBackoff(cap_s=max(min(5.0, self._interval_s), 0.05))
        while not self._stopping.is_set():
            try:
                await self._body()
            except BrokerUnavailableError as exc:
                delay = backoff.next_delay()
                logger.warning(
                    "%s: broker unavailable (%s); retrying in %.2fs", self.name, exc, delay
                )
                self._note_error()
            except Exception:
                delay = backoff.next_delay()
                logger.exception("%s failed; retrying in %.2fs", self.name, delay)
                self._note_error()
            else:
                backoff.reset()
                delay = self._interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _note_error(self) -> None:
        if self._on_error is not None:
            self._on_error()
