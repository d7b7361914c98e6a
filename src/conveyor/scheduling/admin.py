"""What the inspector does with schedule entries: list, add, pause, unpause, remove.

Kept apart from ``inspector.py`` so the inspector's methods stay one line each. Every function
takes the broker's :class:`~conveyor.brokers.schedules.ScheduleStore`.
"""

from __future__ import annotations

from datetime import timedelta

from conveyor.brokers.schedules import ScheduleStore
from conveyor.errors import ScheduleNotFoundError
from conveyor.message import Payload, validate_name
from conveyor.options import DefaultOptions, parse_options
from conveyor.scheduling.entry import ScheduleInfo, new_entry, spec_of

__all__ = ["add_schedule", "list_schedules", "pause_schedule", "remove_schedule"]


async def list_schedules(store: ScheduleStore) -> list[ScheduleInfo]:
    """Every entry, by name."""
    return [ScheduleInfo.from_record(r) for r in await store.list_schedules()]


async def add_schedule(
    store: ScheduleStore,
    name: str,
    task_type: str,
    payload: Payload,
    *,
    cron: str | None,
    every: float | timedelta | None,
    tz: str,
    missed: str,
    options: DefaultOptions,
) -> ScheduleInfo:
    """Store an entry for a raw task type (replacing one of the same name); see
    :meth:`conveyor.inspector.AsyncInspector.add_schedule`."""
    validate_name(task_type, what="task type")
    entry = new_entry(
        name=name,
        task_type=task_type,
        payload=payload,
        cron=cron,
        every=every,
        tz=tz,
        missed=missed,
        options=parse_options(options, defaults_only=True),
    )
    now = await store.schedule_clock()
    record = entry.record(owner=None, next_fire_at=entry.spec.next_after(now))
    return ScheduleInfo.from_record(await store.put_schedule(record))


async def pause_schedule(store: ScheduleStore, name: str) -> None:
    """Pause an entry; raises ``ScheduleNotFoundError`` for an unknown name."""
    await store.pause_schedule(name)


async def unpause_schedule(store: ScheduleStore, name: str) -> None:
    """Unpause an entry: it fires next at its first fire time after now (those it had while
    paused are skipped). Raises ``ScheduleNotFoundError`` for an unknown name."""
    for _ in range(10):  # a concurrent replacement changes the revision: read it again
        record = await store.get_schedule(name)
        if not record.paused:
            return
        now = await store.schedule_clock()
        next_fire_at = spec_of(record).next_after(now)
        if await store.unpause_schedule(name, revision=record.revision, next_fire_at=next_fire_at):
            return
    raise ScheduleNotFoundError(name)


async def remove_schedule(store: ScheduleStore, name: str) -> None:
    """Remove an entry; raises ``ScheduleNotFoundError`` for an unknown name."""
    if not await store.remove_schedule(name):
        raise ScheduleNotFoundError(name)
