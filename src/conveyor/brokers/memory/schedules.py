"""The memory broker's schedule store: the readable specification of
:class:`~conveyor.brokers.schedules.ScheduleStore`.

Entries are :class:`~conveyor.brokers.schedules.ScheduleRecord` values in the broker state's
``schedules`` dict, by name, changed only under the state lock, so each method is one atomic
step exactly as on the other backends.

put_schedule
    An entry with the same definition is kept untouched. Otherwise the new record is stored,
    keeping the old one's paused flag (pausing is an operator's decision; a new version of the
    code must not undo it).
fire_schedules
    Each fire applies only if the entry exists, has the fire's revision, is not paused and its
    cursor equals ``expected_next``. Then each message is enqueued unless its id already
    exists in its queue or its unique key is held (skipped, not an error: that fire time's task
    is already there, or the previous run is still live), the cursor moves to ``next_fire_at``,
    and ``last_fire_at`` / ``last_task_id`` record the latest fire time and the last task
    stored. A workflow entry's workflows are created the same way, in the same step (a
    workflow id already taken is skipped).
due_schedules
    Unpaused entries whose cursor is at or before now, earliest first, and the earliest cursor
    of the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.brokers.schedules import DueSchedules, FireOutcome, ScheduleFire, ScheduleRecord
from conveyor.brokers.workflows import NewWorkflow
from conveyor.errors import DuplicateTaskError, ScheduleNotFoundError, TaskIdConflictError
from conveyor.message import TaskMessage

if TYPE_CHECKING:
    import contextlib

__all__ = ["MemorySchedules"]


class MemorySchedules:
    """Mixin of :class:`~conveyor.brokers.memory.MemoryBroker`: the schedule store."""

    if TYPE_CHECKING:  # provided by MemoryBroker
        clock: Callable[[], float]

        def _locked(self) -> contextlib.AbstractContextManager[Any]: ...

        def _check_new(self, s: Any, messages: Sequence[TaskMessage], now: float) -> None: ...

        def _store(self, s: Any, m: TaskMessage, now: float) -> Any: ...

        def _create_workflow(self, s: Any, workflow: NewWorkflow, now: float) -> datetime: ...

    @staticmethod
    def _entries(s: Any) -> dict[str, ScheduleRecord]:
        found: dict[str, ScheduleRecord] = s.schedules
        return found

    async def schedule_clock(self) -> float:
        """The broker clock."""
        with self._locked():
            return self.clock()

    async def put_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Insert or replace; an entry with the same definition is kept as it is."""
        with self._locked() as s:
            entries = self._entries(s)
            old = entries.get(record.name)
            if old is not None and old.same_definition(record):
                return old
            stored = record if old is None else replace(record, paused=old.paused)
            entries[record.name] = stored
            return stored

    async def get_schedule(self, name: str) -> ScheduleRecord:
        """One entry, or ``ScheduleNotFoundError``."""
        with self._locked() as s:
            found = self._entries(s).get(name)
            if found is None:
                raise ScheduleNotFoundError(name)
            return found

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every entry, by name."""
        with self._locked() as s:
            return [r for _, r in sorted(self._entries(s).items())]

    async def remove_schedule(self, name: str, *, revision: str | None = None) -> bool:
        """Delete an entry (at ``revision`` only, when given)."""
        with self._locked() as s:
            entries = self._entries(s)
            found = entries.get(name)
            if found is None or (revision is not None and found.revision != revision):
                return False
            del entries[name]
            return True

    async def pause_schedule(self, name: str) -> None:
        """Mark an entry paused."""
        with self._locked() as s:
            entries = self._entries(s)
            found = entries.get(name)
            if found is None:
                raise ScheduleNotFoundError(name)
            entries[name] = replace(found, paused=True)

    async def unpause_schedule(self, name: str, *, revision: str, next_fire_at: float) -> bool:
        """Unpause a paused entry at its revision, its cursor set to ``next_fire_at``."""
        with self._locked() as s:
            entries = self._entries(s)
            found = entries.get(name)
            if found is None:
                raise ScheduleNotFoundError(name)
            if found.revision != revision:
                return False
            if found.paused:
                entries[name] = replace(found, paused=False, next_fire_at=next_fire_at)
            return True

    async def due_schedules(self, *, limit: int) -> DueSchedules:
        """Unpaused entries due by now, earliest first, and the next cursor after them."""
        with self._locked() as s:
            now = self.clock()
            live = sorted(
                (r for r in self._entries(s).values() if not r.paused),
                key=lambda r: (r.next_fire_at, r.name),
            )
            due = [r for r in live if r.next_fire_at <= now][: max(limit, 0)]
            rest = live[len(due) :]
            return DueSchedules(now=now, due=due, next_at=rest[0].next_fire_at if rest else None)

    async def fire_schedules(self, fires: Sequence[ScheduleFire]) -> list[FireOutcome]:
        """Apply each fire whose entry is unchanged (see the module docstring)."""
        with self._locked() as s:
            now = self.clock()
            return [self._fire(s, fire, now) for fire in fires]

    def _fire(self, s: Any, fire: ScheduleFire, now: float) -> FireOutcome:
        entries = self._entries(s)
        found = entries.get(fire.name)
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
                self._check_new(s, [m], now)
            except (TaskIdConflictError, DuplicateTaskError):
                continue
            self._store(s, m, now)
            stored.append(m.id)
        for w in fire.workflows:
            try:
                self._create_workflow(s, w, now)
            except (TaskIdConflictError, DuplicateTaskError):
                continue
            stored.append(w.id)
        entries[fire.name] = replace(
            found,
            next_fire_at=fire.next_fire_at,
            last_fire_at=found.last_fire_at if fire.fire_at is None else fire.fire_at,
            last_task_id=stored[-1] if stored else found.last_task_id,
        )
        return FireOutcome(applied=True, stored=tuple(stored))
