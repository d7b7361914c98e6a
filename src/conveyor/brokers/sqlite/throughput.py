"""Per-minute processed/failed totals of the SQLite broker (see ``brokers/throughput.py``).

The table lives in ``throughput.sql`` and is created when a connection opens. Every function
here runs inside the caller's transaction, so a count is written in the same step as the
outcome it counts.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING

from conveyor.brokers.sqlite.queries import parse_queries
from conveyor.brokers.throughput import MINUTE_TOTALS_KEPT, MinuteTotals, series

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.store import Store


@functools.cache
def _queries() -> dict[str, str]:
    text = resources.files(__package__).joinpath("throughput.sql").read_text(encoding="utf-8")
    return parse_queries(text)


def create_table(conn: sqlite3.Connection) -> None:
    """Create the minute table if it is missing (any database, any schema version)."""
    conn.execute(_queries()["create_minute_counts"])


def count(conn: sqlite3.Connection, totals: Mapping[str, list[int]], now: float) -> None:
    """Add ``{queue: [processed, failed]}`` to the minute of broker time ``now``."""
    minute = int(now // 60)
    conn.executemany(
        _queries()["count_minute"], [(q, minute, p, f) for q, (p, f) in totals.items()]
    )


def purge(conn: sqlite3.Connection, now: float) -> None:
    """Drop the minutes older than :data:`MINUTE_TOTALS_KEPT`."""
    conn.execute(_queries()["purge_minutes"], (int(now // 60) - MINUTE_TOTALS_KEPT + 1,))


def forget_queue(conn: sqlite3.Connection, queue: str) -> None:
    """Drop every minute of ``queue`` (``delete_queue``)."""
    conn.execute(_queries()["delete_queue_minutes"], (queue,))


def read(store: Store, queue: str, minutes: int) -> list[MinuteTotals]:
    """The last ``minutes`` minutes of ``queue`` (broker clock), oldest first."""
    minutes = max(1, min(minutes, MINUTE_TOTALS_KEPT))
    with store.read() as now:
        last = int(now // 60)
        rows = store.conn.execute(_queries()["read_minutes"], (queue, last - minutes + 1))
        found = {int(m): (int(p), int(f)) for m, p, f in rows.fetchall()}
    return series(last, minutes, found)
