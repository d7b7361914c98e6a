"""Per-minute processed/failed totals of the Redis broker (see ``brokers/throughput.py``).

The counts are fields of the queue's stats hash (``pm:<minute>``, ``fm:<minute>``), added by the
same scripts that record each outcome (``count_done`` in lib.lua, complete.lua) and dropped by
purge.lua; scripts/throughput.lua reads them with the server's clock.
"""

from __future__ import annotations

from conveyor.brokers.redis.base import RedisBrokerBase
from conveyor.brokers.throughput import MINUTE_TOTALS_KEPT, MinuteTotals, series


class ThroughputMixin(RedisBrokerBase):
    """The :class:`~conveyor.brokers.throughput.Throughput` part of ``RedisBroker``."""

    async def throughput(self, queue: str, *, minutes: int) -> list[MinuteTotals]:
        """Processed/failed totals of the last ``minutes`` minutes (see ``Throughput``)."""
        minutes = max(1, min(minutes, MINUTE_TOTALS_KEPT))
        reply = await self._run("throughput", self._keys(queue).block, [minutes])
        last, *counts = (int(v) for v in reply)
        first = last - minutes + 1
        found = {first + i: (counts[i], counts[minutes + i]) for i in range(minutes)}
        return series(last, minutes, found)
