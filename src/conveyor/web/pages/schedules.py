"""The schedules page: every schedule entry, when it fires next and last, paused or not."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.scheduling.entry import ScheduleInfo
from conveyor.web import data
from conveyor.web.render import page
from conveyor.web.state import Dashboard


def schedule_row(info: ScheduleInfo) -> data.Row:
    """One entry as the page and ``/api/schedules`` show it."""
    payload = info.payload
    preview = repr(payload) if isinstance(payload, bytes) else json.dumps(payload)
    return {
        "name": info.name,
        "task_type": info.task_type,
        "queue": info.queue,
        "cron": info.cron,
        "every_s": None if info.every is None else info.every.total_seconds(),
        "tz": info.tz,
        "missed": info.missed.value,
        "payload_preview": data.clip(preview),
        "next_fire_at": data.iso(info.next_fire_at),
        "last_fire_at": data.iso(info.last_fire_at),
        "last_task_id": info.last_task_id,
        "paused": info.paused,
        "owner": info.owner,
    }


async def schedules_data(dashboard: Dashboard) -> dict[str, Any]:
    """Every schedule entry, by name."""
    inspector = await dashboard.inspector()
    return {"schedules": [schedule_row(s) for s in await inspector.list_schedules()]}


async def schedules_page(request: Request) -> Response:
    """``GET /schedules``."""
    found = await schedules_data(Dashboard.of(request))
    return page(request, "schedules.html", title="Schedules", **found)


routes = [Route("/schedules", schedules_page, methods=["GET"], name="schedules")]
