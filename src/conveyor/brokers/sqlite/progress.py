"""Pipeline progress on the SQLite broker (see :mod:`conveyor.brokers.progress`).

Documents live in the ``task_progress`` table of ``progress.sql``, created on every connection
open (outside the versioned ``schema.sql``), with a trigger that deletes a task's document in the
same transaction as its row. Each method is one statement, so one transaction.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, TypeVar

from conveyor.brokers.sqlite.queries import parse_queries
from conveyor.errors import LeaseLostError
from conveyor.message import Lease

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.store import Store

T = TypeVar("T")


@functools.cache
def progress_queries() -> dict[str, str]:
    """The named statements of ``progress.sql``, read once."""
    text = resources.files(__package__).joinpath("progress.sql").read_text(encoding="utf-8")
    return parse_queries(text)


def create_progress_table(conn: sqlite3.Connection) -> None:
    """Create the progress table and its purge trigger if missing (idempotent)."""
    conn.executescript(progress_queries()["create_progress"])


def _save(store: Store, lease: Lease, progress: bytes) -> None:
    task = lease.task
    with store.write():
        args = (task.queue, task.id, progress, lease.token)
        if store.conn.execute(progress_queries()["save_progress"], args).rowcount != 1:
            raise LeaseLostError(task_id=task.id, queue=task.queue)


def _load(store: Store, queue: str, task_id: str) -> bytes | None:
    row = store.conn.execute(progress_queries()["load_progress"], (queue, task_id)).fetchone()
    return None if row is None else bytes(row[0])


def _resume(store: Store, queue: str, task_id: str, expected: bytes, progress: bytes) -> bool:
    with store.write():
        args = (queue, task_id, progress, expected)
        return store.conn.execute(progress_queries()["resume_progress"], args).rowcount == 1


class SqliteProgress:
    """The :class:`~conveyor.brokers.progress.ProgressStore` methods of ``SqliteBroker``."""

    if TYPE_CHECKING:

        async def _run(self, operation: Callable[[Store], T]) -> T: ...

    async def save_progress(self, lease: Lease, progress: bytes) -> None:
        """Replace the task's progress, if ``lease`` still holds it (else ``LeaseLostError``)."""
        await self._run(lambda store: _save(store, lease, bytes(progress)))

    async def load_progress(self, queue: str, task_id: str) -> bytes | None:
        """The task's progress document, or ``None``."""
        return await self._run(lambda store: _load(store, queue, task_id))

    async def resume_progress(
        self, queue: str, task_id: str, *, expected: bytes, progress: bytes
    ) -> bool:
        """Replace an ARCHIVED task's progress if it still equals ``expected``."""
        return await self._run(lambda store: _resume(store, queue, task_id, expected, progress))


if TYPE_CHECKING:
    from conveyor.brokers.progress import ProgressStore
    from conveyor.brokers.sqlite.broker import SqliteBroker

    def _conforms(b: SqliteBroker) -> ProgressStore:
        return b
