"""Per-minute processed/failed totals of the memory broker (see ``brokers/throughput.py``)."""

from __future__ import annotations

from collections import Counter

from conveyor.brokers.throughput import MINUTE_TOTALS_KEPT, MinuteTotals, series

MinuteCounts = Counter[tuple[str, int, bool]]
"""(queue, minute since the epoch, failed) -> attempts: the memory broker's per-minute totals."""


def count_minute(minutes: MinuteCounts, queue: str, now: float, *, failed: bool) -> None:
    """Count one finished attempt of ``queue`` at broker time ``now``."""
    minute = int(now // 60)
    minutes[(queue, minute, False)] += 1
    if failed:
        minutes[(queue, minute, True)] += 1


def purge_minutes(minutes: MinuteCounts, now: float) -> None:
    """Drop the minutes older than :data:`MINUTE_TOTALS_KEPT`."""
    oldest_kept = int(now // 60) - MINUTE_TOTALS_KEPT + 1
    for key in [k for k in minutes if k[1] < oldest_kept]:
        del minutes[key]


def forget_queue(minutes: MinuteCounts, queue: str) -> None:
    """Drop every minute of ``queue`` (``delete_queue``)."""
    for key in [k for k in minutes if k[0] == queue]:
        del minutes[key]


def read_minutes(minutes: MinuteCounts, queue: str, count: int, now: float) -> list[MinuteTotals]:
    """The last ``count`` minutes of ``queue`` up to broker time ``now``, oldest first."""
    count = max(1, min(count, MINUTE_TOTALS_KEPT))
    last = int(now // 60)
    found = {
        m: (minutes[(queue, m, False)], minutes[(queue, m, True)])
        for m in range(last - count + 1, last + 1)
        if (queue, m, False) in minutes
    }
    return series(last, count, found)
