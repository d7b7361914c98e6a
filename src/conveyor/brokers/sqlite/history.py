"""Attempt history on the SQLite broker (see :mod:`conveyor.brokers.history`).

Records live in the ``task_attempts`` table of ``history.sql``, created on every connection open
(outside the versioned ``schema.sql``). Triggers write them: one on the ``retried`` column, which
every failed attempt's statement increments (so the record is in that statement's transaction,
and nothing runs for a task that never fails), one deleting them with the task's row.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, TypeVar

from conveyor.brokers.sqlite.queries import parse_queries
from conveyor.message import AttemptRecord, to_datetime

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.store import Store

T = TypeVar("T")


@functools.cache
def history_queries() -> dict[str, str]:
    """The named statements of ``history.sql``, read once."""
    text = resources.files(__package__).joinpath("history.sql").read_text(encoding="utf-8")
    return parse_queries(text)


def create_history_table(conn: sqlite3.Connection) -> None:
    """Create the history table and its triggers if missing (idempotent)."""
    conn.executescript(history_queries()["create_history"])


def _load(store: Store, queue: str, task_id: str) -> tuple[AttemptRecord, ...]:
    found = store.conn.execute(history_queries()["load_history"], (queue, task_id)).fetchall()
    records = []
    for attempt, at, error in found:
        when = to_datetime(at)
        if when is not None:
            text = error if isinstance(error, str) else bytes(error).decode(errors="replace")
            records.append(AttemptRecord(attempt=attempt, failed_at=when, error=text))
    return tuple(records)


class SqliteHistory:
    """The :class:`~conveyor.brokers.history.AttemptHistory` method of ``SqliteBroker``."""

    if TYPE_CHECKING:

        async def _run(self, operation: Callable[[Store], T]) -> T: ...

    async def load_history(self, queue: str, task_id: str) -> tuple[AttemptRecord, ...]:
        """The task's failed attempts, oldest first."""
        return await self._run(lambda store: _load(store, queue, task_id))


if TYPE_CHECKING:
    from conveyor.brokers.history import AttemptHistory
    from conveyor.brokers.sqlite.broker import SqliteBroker

    def _conforms(b: SqliteBroker) -> AttemptHistory:
        return b
