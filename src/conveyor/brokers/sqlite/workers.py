"""Worker records and cancel requests of the SQLite broker (see :mod:`conveyor.brokers.workers`).

Two tables of their own (``workers.sql``), created when a connection opens. Each call is one
transaction on the broker's database thread, timed by the broker clock read inside it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from conveyor.brokers.sqlite.queries import parse_queries
from conveyor.brokers.workers import WorkerInfo, decode_worker, encode_worker
from conveyor.errors import TaskNotActiveError, TaskNotFoundError
from conveyor.message import Lease, TaskState

if TYPE_CHECKING:
    import sqlite3

    from conveyor.brokers.sqlite.store import Store

__all__ = ["SqliteWorkersMixin", "create_tables", "forget_cancels"]

T = TypeVar("T")


@functools.cache
def _queries() -> dict[str, str]:
    from importlib import resources

    text = resources.files(__package__).joinpath("workers.sql").read_text(encoding="utf-8")
    return parse_queries(text)


def create_tables(conn: sqlite3.Connection) -> None:
    """Create the registry's tables if missing (called for every new connection)."""
    q = _queries()
    conn.execute(q["create_workers"])
    conn.execute(q["create_cancel_requests"])


def forget_cancels(store: Store, queue: str) -> None:
    """Drop ``queue``'s cancel requests (inside ``delete_queue``'s transaction)."""
    store.conn.execute(_queries()["delete_queue_cancels"], (queue,))


def _register(store: Store, record: str, worker_id: str, ttl_s: float) -> None:
    with store.write() as now:
        store.conn.execute(_queries()["upsert_worker"], (worker_id, record, now, now + ttl_s))


def _unregister(store: Store, worker_id: str) -> None:
    with store.write():
        store.conn.execute(_queries()["delete_worker"], (worker_id,))


def _list(store: Store) -> list[WorkerInfo]:
    q = _queries()
    with store.write() as now:
        store.conn.execute(q["delete_lapsed_workers"], (now,))
        found = store.conn.execute(q["live_workers"], (now,)).fetchall()
    return [decode_worker(record, beat) for record, beat in found]


def _request_cancel(store: Store, queue: str, task_id: str) -> None:
    q = _queries()
    with store.write():
        row = store.conn.execute(q["task_state_token"], (queue, task_id)).fetchone()
        if row is None:
            raise TaskNotFoundError(
                f"no task {task_id!r} in queue {queue!r}", task_id=task_id, queue=queue
            )
        state, token = row
        if state != TaskState.ACTIVE.value:
            raise TaskNotActiveError(task_id=task_id, queue=queue, state=str(state))
        store.conn.execute(q["delete_ended_cancels"], (queue,))
        store.conn.execute(q["upsert_cancel"], (queue, task_id, token))


def _cancel_requested(store: Store, leases: Sequence[Lease]) -> list[bool]:
    query = _queries()["cancel_token"]
    with store.read():
        found = [
            store.conn.execute(query, (lease.task.queue, lease.task.id)).fetchone()
            for lease in leases
        ]
    return [
        row is not None and row[0] == lease.token for row, lease in zip(found, leases, strict=True)
    ]


class SqliteWorkersMixin:
    """The :class:`~conveyor.brokers.workers.WorkerRegistry` half of ``SqliteBroker``."""

    if TYPE_CHECKING:

        async def _run(self, operation: Callable[[Store], T]) -> T: ...

    async def register_worker(self, worker: WorkerInfo, *, ttl_s: float) -> None:
        """Store or refresh ``worker``'s record until ``now + ttl_s``."""
        record = encode_worker(worker)
        await self._run(lambda store: _register(store, record, worker.id, ttl_s))

    async def unregister_worker(self, worker_id: str) -> None:
        """Delete a worker's record."""
        await self._run(lambda store: _unregister(store, worker_id))

    async def list_workers(self) -> list[WorkerInfo]:
        """Live records by id; lapsed ones are deleted."""
        return await self._run(_list)

    async def request_cancel(self, queue: str, task_id: str) -> None:
        """Ask for the current attempt of an ACTIVE task to be cancelled."""
        await self._run(lambda store: _request_cancel(store, queue, task_id))

    async def cancel_requested(self, leases: Sequence[Lease]) -> list[bool]:
        """Whether each lease's attempt has a cancel request."""
        if not leases:
            return []
        return await self._run(lambda store: _cancel_requested(store, leases))
