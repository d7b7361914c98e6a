"""Cancel watch: finds the inspector's cancel requests for the tasks this worker runs.

Every ``interval_s`` (half a second) while the worker holds leases, one read asks the broker which
of them carry a cancel request (``cancel_requested``: dict lookups on memory, one read
transaction of primary-key lookups on SQLite, one HMGET per queue on Redis). An idle worker asks
nothing. Why a short read and not the lease renewal's round trip: renewal runs every third of the
lease (10 s by default), far from the promised second. Why not a push channel: each backend would
need its own (Redis pub/sub, SQLite's best-effort wake-up datagrams), and a push missed during a
reconnect would still need this read as a fallback; the read alone is simple, the same
everywhere, and cannot miss a request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from conveyor.brokers.protocol import Broker
from conveyor.brokers.workers import WorkerRegistry
from conveyor.message import Lease
from conveyor.worker.heartbeat import LeaseRegistry
from conveyor.worker.periodic import PeriodicLoop

logger = logging.getLogger(__name__)

CANCEL_CHECK_S = 0.5
"""How often a busy worker asks for cancel requests: a cancel takes effect within about this."""


class CancelWatch:
    """Asks the broker for cancel requests on the held leases and hands them to ``on_cancel``.

    Args:
        broker: the server's broker (without the registry, the watch does nothing).
        registry: the leases this worker holds.
        on_cancel: called on the loop with the leases whose attempt must be cancelled.
        on_error: called after a failed check.
        interval_s: time between checks.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        registry: LeaseRegistry,
        on_cancel: Callable[[list[Lease]], None],
        on_error: Callable[[], None],
        interval_s: float = CANCEL_CHECK_S,
    ) -> None:
        self._broker = broker
        self._registry = registry
        self._on_cancel = on_cancel
        self._loop = PeriodicLoop("cancel watch", interval_s, self._check, on_error=on_error)

    def start(self) -> None:
        """Start watching on the running event loop."""
        if isinstance(self._broker, WorkerRegistry):
            self._loop.start()

    async def stop(self) -> None:
        """Stop watching."""
        await self._loop.stop()

    async def _check(self) -> None:
        leases = self._registry.snapshot()
        if not leases:
            return
        assert isinstance(self._broker, WorkerRegistry)
        flags = await self._broker.cancel_requested(leases)
        found = [lease for lease, flag in zip(leases, flags, strict=True) if flag]
        if found:
            self._on_cancel(found)
