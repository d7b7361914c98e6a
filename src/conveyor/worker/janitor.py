"""Janitor: deletes completed tasks past their retention, expired unique locks, and finished
workflows past theirs."""

from __future__ import annotations

import logging
from collections.abc import Callable

from conveyor.brokers.protocol import Broker
from conveyor.brokers.workflows import WorkflowBroker
from conveyor.worker.periodic import PeriodicLoop

logger = logging.getLogger(__name__)


class Janitor:
    """Calls ``broker.purge_expired`` every ``interval_s`` seconds (and once at start).

    Args:
        broker: the server's broker.
        interval_s: time between purges.
        on_purged: called with the number of tasks each purge deleted (when not zero).
        on_error: called after a failed purge.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        interval_s: float,
        on_purged: Callable[[int], None],
        on_error: Callable[[], None],
    ) -> None:
        self._broker = broker
        self._on_purged = on_purged
        self._loop = PeriodicLoop("janitor", interval_s, self._purge, on_error=on_error)

    def start(self) -> None:
        """Start purging on the running event loop."""
        self._loop.start()

    async def stop(self) -> None:
        """Stop purging."""
        await self._loop.stop()

    async def _purge(self) -> None:
        count = await self._broker.purge_expired()
        if count:
            logger.debug("purged %d expired tasks", count)
            self._on_purged(count)
        if isinstance(self._broker, WorkflowBroker):
            workflows = await self._broker.purge_workflows()
            if workflows:
                logger.debug("purged %d finished workflows", workflows)
