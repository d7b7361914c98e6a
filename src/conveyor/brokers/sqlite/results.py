"""Waiting for one task's result on SQLite: a row saying who waits, a wake-up after the commit.

A waiting call inserts a row in ``result_waits`` and sleeps on the broker's wake-ups (the same
ones idle workers get: local futures, and datagrams from other processes, see wake.py). A
completion of a *retained* task (the only kind whose result can be waited for) and an archive
look the task up there inside their transaction, and only when someone waits do they send the
wake-up after the commit: a completion nobody waits for costs one indexed lookup in an empty
table, and a task without retention not even that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from conveyor.brokers.results import DONE_STATES
from conveyor.brokers.sqlite.queries import parse_queries
from conveyor.message import TaskInfo

if TYPE_CHECKING:
    import sqlite3

    from conveyor.brokers.sqlite.store import Store

__all__ = ["SqliteResults", "create_tables", "is_waited"]

T = TypeVar("T")

# A waiter re-reads the task at least this often, in case a wake-up datagram was lost (its
# delivery is best effort): a safety net, not a poll.
_RECHECK_S = 0.25


@functools.cache
def _queries() -> dict[str, str]:
    from importlib import resources

    text = resources.files(__package__).joinpath("results.sql").read_text(encoding="utf-8")
    return parse_queries(text)


def create_tables(conn: sqlite3.Connection) -> None:
    """Create the waiters' table if missing (called for every new connection)."""
    q = _queries()
    conn.execute(q["create_result_waits"])
    conn.execute(q["create_result_waits_index"])


def is_waited(store: Store, queue: str, task_id: str) -> bool:
    """Whether a call waits on the task's result (inside the ending transaction)."""
    return store.conn.execute(_queries()["is_waited"], (queue, task_id)).fetchone() is not None


class SqliteResults:
    """``wait_task`` of :class:`~conveyor.brokers.sqlite.SqliteBroker` (a mixin)."""

    if TYPE_CHECKING:  # provided by SqliteBroker

        async def _run(self, operation: Callable[[Store], T]) -> T: ...
        async def get_task(self, queue: str, task_id: str) -> TaskInfo: ...
        def _register_waiter(
            self,
        ) -> contextlib.AbstractContextManager[asyncio.Future[None]]: ...

    async def wait_task(self, queue: str, task_id: str, timeout_s: float) -> TaskInfo:
        """The task once it ended, or as it is after ``timeout_s`` (woken by its end)."""
        q = _queries()

        def add(store: Store) -> int:
            with store.write():
                row = store.conn.execute(q["add_wait"], (queue, task_id))
                return int(row.lastrowid or 0)

        def drop(store: Store) -> None:
            with store.write():
                store.conn.execute(q["drop_wait"], (row_id,))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        row_id = await self._run(add)  # interest first: an end after this wakes us
        try:
            while True:
                with self._register_waiter() as future:
                    info = await self.get_task(queue, task_id)
                    remaining = deadline - loop.time()
                    if info.state in DONE_STATES or remaining <= 0:
                        return info
                    await asyncio.wait([future], timeout=min(remaining, _RECHECK_S))
        finally:
            await self._run(drop)
