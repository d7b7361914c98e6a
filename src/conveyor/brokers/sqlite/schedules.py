"""The SQLite broker's schedule store: one table (``schedules.sql``), one transaction per step.

The rules are the memory broker's (``brokers/memory/schedules.py``). A fire runs in one write
transaction (``BEGIN IMMEDIATE``: the write lock first, so the cursor read and its update cannot
interleave with another process's): read the entry, check revision, cursor and paused flag,
insert each message in a savepoint (an id or unique key already taken skips that message),
create each workflow of a workflow entry in a savepoint too (a workflow id already taken skips
it), move the cursor.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.brokers.schedules import DueSchedules, FireOutcome, ScheduleFire, ScheduleRecord
from conveyor.brokers.sqlite.queries import parse_queries
from conveyor.brokers.sqlite.workflows import create_workflow_in
from conveyor.errors import DuplicateTaskError, ScheduleNotFoundError, TaskIdConflictError
from conveyor.message import Encoding

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.store import Store

__all__ = ["SqliteSchedules", "apply_schema"]

T = TypeVar("T")


@functools.cache
def _queries() -> dict[str, str]:
    text = resources.files(__package__).joinpath("schedules.sql").read_text(encoding="utf-8")
    return parse_queries(text)


def apply_schema(conn: sqlite3.Connection) -> None:
    """Create the schedules table if the file lacks it (each time a connection opens)."""
    conn.executescript(_queries()["schema"])


def _record(row: Sequence[Any]) -> ScheduleRecord:
    return ScheduleRecord(
        name=row[0],
        task_type=row[1],
        queue=row[2],
        payload=bytes(row[3]),
        encoding=Encoding.BYTES if row[4] == Encoding.BYTES.value else Encoding.JSON,
        options=row[5],
        cron=row[6],
        every_us=row[7],
        tz=row[8],
        missed=row[9],
        owner=row[10],
        revision=row[11],
        paused=bool(row[12]),
        next_fire_at=row[13],
        last_fire_at=row[14],
        last_task_id=row[15],
    )


def _params(r: ScheduleRecord) -> tuple[object, ...]:
    return (
        r.name, r.task_type, r.queue, r.payload, r.encoding.value, r.options, r.cron, r.every_us,
        r.tz, r.missed, r.owner, r.revision, int(r.paused), r.next_fire_at, r.last_fire_at,
        r.last_task_id,
    )  # fmt: skip


def _get(store: Store, name: str) -> ScheduleRecord | None:
    row = store.conn.execute(_queries()["schedule_get"], (name,)).fetchone()
    return None if row is None else _record(row)


def _put(store: Store, record: ScheduleRecord) -> ScheduleRecord:
    with store.write():
        old = _get(store, record.name)
        if old is not None and old.same_definition(record):
            return old
        store.conn.execute(_queries()["schedule_upsert"], _params(record))
        stored = _get(store, record.name)
    assert stored is not None
    return stored


def _pause(store: Store, name: str) -> None:
    with store.write():
        if store.conn.execute(_queries()["schedule_pause"], (name,)).rowcount == 0:
            raise ScheduleNotFoundError(name)


def _unpause(store: Store, name: str, revision: str, next_fire_at: float) -> bool:
    with store.write():
        found = _get(store, name)
        if found is None:
            raise ScheduleNotFoundError(name)
        if found.revision != revision:
            return False
        store.conn.execute(_queries()["schedule_unpause"], (next_fire_at, name, revision))
        return True


def _due(store: Store, limit: int) -> DueSchedules:
    with store.read() as now:
        rows = store.conn.execute(_queries()["schedule_due"], (now, max(limit, 0))).fetchall()
        next_at = store.conn.execute(_queries()["schedule_next_after"], (now,)).fetchone()[0]
    return DueSchedules(now=now, due=[_record(r) for r in rows], next_at=next_at)


def _fire_one(store: Store, fire: ScheduleFire, now: float) -> FireOutcome:
    found = _get(store, fire.name)
    if (
        found is None
        or found.paused
        or found.revision != fire.revision
        or found.next_fire_at != fire.expected_next
    ):
        return FireOutcome(applied=False)
    stored: list[str] = []
    for m in fire.messages:
        try:
            store._insert([m], now, None)
        except (TaskIdConflictError, DuplicateTaskError):
            continue
        stored.append(m.id)
    for w in fire.workflows:
        # A savepoint: a refused step message must not leave the workflow half stored.
        store.conn.execute("SAVEPOINT schedule_workflow")
        try:
            create_workflow_in(store, w, now)
        except (TaskIdConflictError, DuplicateTaskError):
            store.conn.execute("ROLLBACK TO schedule_workflow")
        else:
            stored.append(w.id)
        store.conn.execute("RELEASE schedule_workflow")
    store.conn.execute(
        _queries()["schedule_advance"],
        (
            fire.next_fire_at,
            fire.fire_at,
            stored[-1] if stored else None,
            fire.name,
            fire.revision,
            fire.expected_next,
        ),
    )
    return FireOutcome(applied=True, stored=tuple(stored))


def _fire(store: Store, fires: Sequence[ScheduleFire]) -> list[FireOutcome]:
    with store.write() as now:
        outcomes = [_fire_one(store, fire, now) for fire in fires]
    if any(o.stored for o in outcomes):
        store.notify_ready()
    return outcomes


class SqliteSchedules:
    """Mixin of :class:`~conveyor.brokers.sqlite.SqliteBroker`: the schedule store."""

    if TYPE_CHECKING:  # provided by SqliteBroker

        async def _run(self, operation: Callable[[Store], T]) -> T: ...

    async def schedule_clock(self) -> float:
        """The broker clock (read inside a transaction, as every other step reads it)."""

        def clock(store: Store) -> float:
            with store.read() as now:
                return now

        return await self._run(clock)

    async def put_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Insert or replace; an entry with the same definition is kept as it is."""
        return await self._run(lambda s: _put(s, record))

    async def get_schedule(self, name: str) -> ScheduleRecord:
        """One entry, or ``ScheduleNotFoundError``."""

        def get(store: Store) -> ScheduleRecord:
            with store.read():
                found = _get(store, name)
            if found is None:
                raise ScheduleNotFoundError(name)
            return found

        return await self._run(get)

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every entry, by name."""

        def list_all(store: Store) -> list[ScheduleRecord]:
            with store.read():
                return [_record(r) for r in store.conn.execute(_queries()["schedule_list"])]

        return await self._run(list_all)

    async def remove_schedule(self, name: str, *, revision: str | None = None) -> bool:
        """Delete an entry (at ``revision`` only, when given)."""

        def remove(store: Store) -> bool:
            with store.write():
                query = _queries()["schedule_delete"]
                return store.conn.execute(query, (name, revision, revision)).rowcount > 0

        return await self._run(remove)

    async def pause_schedule(self, name: str) -> None:
        """Mark an entry paused."""
        await self._run(lambda s: _pause(s, name))

    async def unpause_schedule(self, name: str, *, revision: str, next_fire_at: float) -> bool:
        """Unpause a paused entry at its revision, its cursor set to ``next_fire_at``."""
        return await self._run(lambda s: _unpause(s, name, revision, next_fire_at))

    async def due_schedules(self, *, limit: int) -> DueSchedules:
        """Unpaused entries due by now, earliest first, and the next cursor after them."""
        return await self._run(lambda s: _due(s, limit))

    async def fire_schedules(self, fires: Sequence[ScheduleFire]) -> list[FireOutcome]:
        """Apply each fire whose entry is unchanged, all in one transaction."""
        if not fires:
            return []
        return await self._run(lambda s: _fire(s, fires))
