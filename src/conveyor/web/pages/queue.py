"""A queue's page: counts, its chart, a tab per state and that state's tasks, page by page."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.message import TaskState
from conveyor.web import data
from conveyor.web.pages.actions import ACTIONS_BY_STATE, BULK_ACTIONS
from conveyor.web.pages.overview import CHART_MINUTES
from conveyor.web.params import MAX_PAGE_SIZE, PAGE_SIZE, int_param, pages_for, state_param
from conveyor.web.render import page
from conveyor.web.state import Dashboard


async def queue_data(dashboard: Dashboard, queue: str) -> dict[str, Any]:
    """A queue's counts and chart: what the page and ``/api/queues/{queue}`` show."""
    inspector = await dashboard.inspector()
    stats = data.queue_row(await inspector.queue_info(queue))
    minutes = data.minutes_rows(await inspector.throughput(queue, minutes=CHART_MINUTES))
    return {"stats": stats, "minutes": minutes}


async def tasks_data(request: Request, queue: str, stats: data.Row | None = None) -> dict[str, Any]:
    """One page of a state's tasks with the paging around it (page and ``/api/`` alike).

    ``stats`` is the queue's :func:`~conveyor.web.data.queue_row` when the caller has it
    already: counting a big queue's states is the dearest part of the page on SQLite.
    """
    inspector = await Dashboard.of(request).inspector()
    state = state_param(request)
    size = int_param(request, "size", PAGE_SIZE, 1, MAX_PAGE_SIZE)
    if stats is None:
        stats = data.queue_row(await inspector.queue_info(queue))
    total: int = stats[state.value]
    pages = pages_for(total, size)
    number = int_param(request, "page", 1, 1, pages)
    tasks = await inspector.list_tasks(queue, state, page=number, size=size)
    return {
        "state": state.value,
        "page": number,
        "pages": pages,
        "size": size,
        "total": total,
        "has_prev": number > 1,
        "has_next": number < pages,
        "tasks": [data.task_row(t) for t in tasks],
    }


async def queue_page(request: Request) -> Response:
    """``GET /queues/{queue}?state=...&page=...``."""
    queue = request.path_params["queue"]
    found = await queue_data(Dashboard.of(request), queue)
    listing = await tasks_data(request, queue, found["stats"])
    actions = ACTIONS_BY_STATE[TaskState(listing["state"])]
    return page(
        request,
        "queue.html",
        title=f"Queue {queue}",
        queue=queue,
        states=data.STATES,
        actions=actions,
        bulk_actions=tuple(verb for verb in actions if verb in BULK_ACTIONS),
        **found,
        **listing,
    )


routes = [Route("/queues/{queue}", queue_page, methods=["GET"], name="queue")]
