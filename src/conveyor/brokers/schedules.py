"""The schedule store: a small protocol beside :class:`~conveyor.brokers.protocol.Broker`.

Schedule entries live in the broker, so any number of schedulers (and the inspector) share
them. The store never computes a fire time (cron is not something Lua or SQL can do); it keeps
each entry's *cursor* (``next_fire_at``, the first fire time not yet handled) and moves it only
by a compare-and-set, in the same atomic step that enqueues the fire's tasks:

    put_schedule     insert, or replace when the definition differs (an identical one is kept,
                     cursor and all, so two schedulers starting at once never reset it)
    fire_schedules   for each fire: if the entry still has this revision and this cursor and
                     is not paused, enqueue its messages (an id or unique key already taken is
                     skipped, not an error) and move the cursor; else change nothing ("stale")

A fire time is enqueued at most once because the cursor moves past it in the step that enqueues
it, and only one compare-and-set on a cursor value can succeed.

An entry whose target is a workflow fires workflows instead of messages
(:attr:`ScheduleFire.workflows`), each with an id derived from the entry's name and the fire
time. The memory and SQLite stores create them in the fire's own step (a workflow id already
taken is skipped, like a message's). Redis records them in the fire's step, beside the entry,
and creates each in its own slot next; a record a dead scheduler left is finished by the next
scheduler's ``due_schedules`` (see ``brokers/redis/schedule_workflows.py``). Time comes from
the broker's clock (``schedule_clock`` and ``DueSchedules.now``).

Every backend implements it: ``brokers/memory/schedules.py``, ``brokers/sqlite/schedules.py``,
``brokers/redis/schedules.py``; the conformance suite (``tests/conformance/test_schedules.py``)
runs on each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from conveyor.brokers.workflows import NewWorkflow
from conveyor.message import Encoding, TaskMessage

__all__ = ["DueSchedules", "FireOutcome", "ScheduleFire", "ScheduleRecord", "ScheduleStore"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRecord:
    """One stored schedule entry: its definition, its cursor and what it fired last.

    The definition is a task type, an encoded payload and the enqueue options, so any target
    (a task function today, a signature later) is stored the same way. Times are seconds since
    the epoch.
    """

    name: str
    task_type: str
    queue: str
    payload: bytes = b"null"
    encoding: Encoding = Encoding.JSON
    options: str = "{}"
    """The message fields other than type, queue and payload, as a JSON object (see
    :mod:`conveyor.scheduling.entry`)."""
    cron: str | None = None
    every_us: int | None = None
    tz: str = "UTC"
    missed: str = "once"
    owner: str | None = None
    """The app group that defines it in code; ``None`` when added through the inspector."""
    revision: str = ""
    """Changes whenever the definition is replaced: a fire planned on an older read is stale."""
    paused: bool = False
    next_fire_at: float = 0.0
    last_fire_at: float | None = None
    last_task_id: str | None = None

    def same_definition(self, other: ScheduleRecord) -> bool:
        """Whether ``other`` defines the same entry (state fields aside)."""
        return _definition(self) == _definition(other)


def _definition(r: ScheduleRecord) -> tuple[object, ...]:
    return (
        r.name,
        r.task_type,
        r.queue,
        r.payload,
        r.encoding,
        r.options,
        r.cron,
        r.every_us,
        r.tz,
        r.missed,
        r.owner,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleFire:
    """One compare-and-set step on an entry's cursor, with the tasks it enqueues.

    Applied only if the entry still has ``revision``, its cursor is ``expected_next`` and it is
    not paused. ``fire_at`` is the latest fire time that got a task (shown as
    ``last_fire_at``; ``None`` leaves that unchanged).
    """

    name: str
    queue: str
    """The entry's queue (where its record lives on Redis)."""
    revision: str
    expected_next: float
    next_fire_at: float
    fire_at: float | None
    messages: tuple[TaskMessage, ...] = ()
    workflows: tuple[NewWorkflow, ...] = ()
    """A workflow entry's workflows, one per fire time (its ``messages`` are empty)."""

    @property
    def ids(self) -> tuple[str, ...]:
        """The ids of what it stores, in fire-time order: task ids, or workflow ids."""
        return tuple(m.id for m in self.messages) + tuple(w.id for w in self.workflows)


@dataclass(frozen=True, slots=True, kw_only=True)
class FireOutcome:
    """What one :class:`ScheduleFire` did."""

    applied: bool
    """``False``: stale (changed, paused, removed, or another scheduler fired it); nothing done."""
    stored: tuple[str, ...] = ()
    """Ids of the messages enqueued (or workflows created); the others' id or unique key was
    already taken."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DueSchedules:
    """What a scheduler needs for one round: the broker's time, the entries due, and when the
    next not-yet-due one is."""

    now: float
    due: list[ScheduleRecord]
    next_at: float | None
    """The earliest cursor of the unpaused entries not returned (``None``: none)."""


@runtime_checkable
class ScheduleStore(Protocol):
    """Schedule entries kept in the broker. Every method is one atomic step."""

    async def schedule_clock(self) -> float:
        """The broker's clock, seconds since the epoch."""
        ...

    async def put_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Store ``record`` under its name and return what is stored.

        An entry with the same definition (:meth:`ScheduleRecord.same_definition`) is kept as
        it is, cursor, revision and paused flag included. Otherwise the record replaces it
        (keeping only its paused flag) or is inserted.
        """
        ...

    async def get_schedule(self, name: str) -> ScheduleRecord:
        """One entry.

        Raises:
            ScheduleNotFoundError: no entry has that name.
        """
        ...

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every entry, sorted by name."""
        ...

    async def remove_schedule(self, name: str, *, revision: str | None = None) -> bool:
        """Delete an entry (only at ``revision`` when given); ``False`` if nothing was deleted."""
        ...

    async def pause_schedule(self, name: str) -> None:
        """Stop an entry firing until it is unpaused.

        Raises:
            ScheduleNotFoundError: no entry has that name.
        """
        ...

    async def unpause_schedule(self, name: str, *, revision: str, next_fire_at: float) -> bool:
        """Let a paused entry fire again from ``next_fire_at`` (its fire times while paused are
        skipped). ``False`` when the entry no longer has ``revision``; a no-op when it is not
        paused.

        Raises:
            ScheduleNotFoundError: no entry has that name.
        """
        ...

    async def due_schedules(self, *, limit: int) -> DueSchedules:
        """Up to ``limit`` unpaused entries whose cursor is at or before the broker's now,
        earliest first."""
        ...

    async def fire_schedules(self, fires: Sequence[ScheduleFire]) -> list[FireOutcome]:
        """Apply each fire as one atomic step (see the module docstring); one outcome each."""
        ...
