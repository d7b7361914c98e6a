"""Throughput history: how many attempts finished and failed in each recent minute of a queue.

The daily totals of :meth:`~conveyor.brokers.protocol.Broker.queue_stats` say how a day went; an
operator looking at a queue right now wants its last hour, minute by minute (the dashboard's
chart). Every backend counts each finished attempt in the same step that records it, exactly as
it counts the daily totals: a completion counts one processed, a failed attempt (retry, archive,
lease recovery) one processed and one failed; inspector operations count nothing. Minutes are
UTC minutes of the broker's clock. ``purge_expired`` drops minutes older than
:data:`MINUTE_TOTALS_KEPT`; ``delete_queue`` drops the queue's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["MINUTE_TOTALS_KEPT", "MinuteTotals", "Throughput", "minute_start", "series"]

MINUTE_TOTALS_KEPT = 120
"""How many minutes of per-minute totals a broker keeps: two hours, so an hour's chart is whole
between two purges of the janitor."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MinuteTotals:
    """The attempts of one queue that finished within one UTC minute."""

    minute: datetime
    """Start of the minute (aware, UTC)."""
    processed: int = 0
    """Attempts that finished: succeeded or failed."""
    failed: int = 0
    """Attempts that failed (retried, archived, or lost with their worker)."""


@runtime_checkable
class Throughput(Protocol):
    """A broker that keeps per-minute processed/failed totals (every built-in backend does)."""

    async def throughput(self, queue: str, *, minutes: int) -> list[MinuteTotals]:
        """The totals of each of the last ``minutes`` minutes of ``queue``, oldest first.

        The last entry is the current minute (still counting); minutes with nothing finished
        are there with zeros, so the list always has ``minutes`` entries. ``minutes`` is
        between 1 and :data:`MINUTE_TOTALS_KEPT` (callers check; backends may clamp).
        """
        ...


def minute_start(minute: int) -> datetime:
    """The start of minute number ``minute`` (minutes since the epoch) as an aware datetime."""
    return datetime.fromtimestamp(minute * 60, UTC)


def series(
    last_minute: int, minutes: int, counts: dict[int, tuple[int, int]]
) -> list[MinuteTotals]:
    """``minutes`` entries ending at ``last_minute``, from ``{minute: (processed, failed)}``."""
    first = last_minute - minutes + 1
    return [
        MinuteTotals(minute=minute_start(m), processed=p, failed=f)
        for m in range(first, last_minute + 1)
        for p, f in [counts.get(m, (0, 0))]
    ]
