"""Recoverer: brings back the tasks of workers that died, once their leases lapse.

Every worker runs one; they may race (asynq #717), which is safe because ``recover_expired`` is one
atomic step per task in every broker. A recovered task counts as a failed attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from conveyor.brokers.protocol import Broker
from conveyor.worker.periodic import PeriodicLoop

logger = logging.getLogger(__name__)


class Recoverer:
    """Calls ``broker.recover_expired`` every ``interval_s`` seconds (and once at start).

    Args:
        broker: the server's broker.
        interval_s: time between scans.
        delay_s: how long a recovered task waits in RETRY before it runs again.
        max_crashes: lost leases after which a recovered task is archived instead.
        on_recovered: called with the number of tasks each scan recovered (when not zero).
        on_error: called after a failed scan.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        interval_s: float,
        delay_s: float,
        max_crashes: int,
        on_recovered: Callable[[int], None],
        on_error: Callable[[], None],
    ) -> None:
        self._broker = broker
        self._delay_s = delay_s
        self._max_crashes = max_crashes
        self._on_recovered = on_recovered
        self._loop = PeriodicLoop("recoverer", interval_s, self._scan, on_error=on_error)

    def start(self) -> None:
        """Start scanning on the running event loop."""
        self._loop.start()

    async def stop(self) -> None:
        """Stop scanning."""
        await self._loop.stop()

    async def _scan(self) -> None:
        count = await self._broker.recover_expired(
            delay_s=self._delay_s, max_crashes=self._max_crashes
        )
        if count:
            logger.warning("recovered %d tasks whose lease expired (worker lost)", count)
            self._on_recovered(count)
