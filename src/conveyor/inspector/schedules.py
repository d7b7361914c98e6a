"""The inspector's schedule methods (docs/scheduling.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Unpack

from conveyor.inspector.base import InspectorBase
from conveyor.message import Payload
from conveyor.options import DefaultOptions
from conveyor.scheduling.admin import (
    add_schedule,
    list_schedules,
    pause_schedule,
    remove_schedule,
    unpause_schedule,
)
from conveyor.scheduling.entry import ScheduleInfo
from conveyor.scheduling.scheduler import schedule_store


class ScheduleMethods(InspectorBase):
    """Schedule entries: list, add or replace, pause, resume, remove."""

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule entry in the broker, by name (code-defined and inspector-added)."""
        return await list_schedules(schedule_store(self._broker))

    async def add_schedule(
        self,
        name: str,
        task_type: str,
        payload: Payload = None,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        missed: str = "once",
        **enqueue_options: Unpack[DefaultOptions],
    ) -> ScheduleInfo:
        """Schedule a raw task; an entry of the same name is replaced (kept if identical).

        Any running scheduler fires it; a starting scheduler never removes it.

        Raises:
            ConfigError: a bad name, task type, cron expression, interval, time zone, or
                ``missed`` value (naming the bad part), or a bad option.
        """
        return await add_schedule(
            schedule_store(self._broker),
            name,
            task_type,
            payload,
            cron=cron,
            every=every,
            tz=tz,
            missed=missed,
            options=enqueue_options,
        )

    async def pause_schedule(self, name: str) -> None:
        """Stop an entry firing; its fire times while paused are skipped, not missed.

        Raises:
            ScheduleNotFoundError: (a ``LookupError``) no entry has that name.
        """
        await pause_schedule(schedule_store(self._broker), name)

    async def unpause_schedule(self, name: str) -> None:
        """Let a paused entry fire again, from its next fire time after now.

        Raises:
            ScheduleNotFoundError: (a ``LookupError``) no entry has that name.
        """
        await unpause_schedule(schedule_store(self._broker), name)

    async def remove_schedule(self, name: str) -> None:
        """Delete an entry (a code-defined one comes back when its app's scheduler restarts).

        Raises:
            ScheduleNotFoundError: (a ``LookupError``) no entry has that name.
        """
        await remove_schedule(schedule_store(self._broker), name)
