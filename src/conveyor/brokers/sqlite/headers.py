"""Task headers in the SQLite broker: a ``headers`` column, written only for tasks that have any.

The column (``headers.sql``) is added when a connection opens. Inserts of tasks stay as they
are; the headers of the few tasks that carry some are set by an UPDATE in the same transaction,
so a task without headers costs nothing more. Reads select the column with the other task
columns (``rows.HEADERS``); retries, recoveries and re-runs never touch it.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence

from conveyor.brokers.sqlite.queries import parse_queries
from conveyor.message import TaskMessage

__all__ = ["add_column", "store_headers"]


@functools.cache
def _queries() -> dict[str, str]:
    from importlib import resources

    text = resources.files(__package__).joinpath("headers.sql").read_text(encoding="utf-8")
    return parse_queries(text)


def _has_column(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "headers" for row in conn.execute("PRAGMA table_info(tasks)"))


def add_column(conn: sqlite3.Connection) -> None:
    """Add the ``headers`` column if the file lacks it (called for every new connection)."""
    if _has_column(conn):
        return
    # Checked again under the write lock: processes opening the same file at once add it once.
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _has_column(conn):
            conn.execute(_queries()["add_headers_column"])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def store_headers(conn: sqlite3.Connection, messages: Sequence[TaskMessage]) -> None:
    """Set the headers of the just-inserted ``messages`` that have any (in their transaction)."""
    params = [(m.headers, m.queue, m.id) for m in messages if m.headers is not None]
    if params:
        conn.executemany(_queries()["set_headers"], params)
