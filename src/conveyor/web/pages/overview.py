"""The overview: every queue with its counts by state and paused flag, and the last hour's
processed and failed attempts per minute, all queues together, as a chart; the workers alive."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.web import data
from conveyor.web.render import page
from conveyor.web.state import Dashboard

CHART_MINUTES = 60


async def overview_data(dashboard: Dashboard) -> dict[str, Any]:
    """Every queue's counts, the all-queues chart and the live workers' number: what the page
    and ``/api/queues`` show."""
    inspector = await dashboard.inspector()
    queues = []
    chart: list[data.Row] = []
    for name in await inspector.queues():
        queues.append(data.queue_row(await inspector.queue_info(name)))
        series = data.minutes_rows(await inspector.throughput(name, minutes=CHART_MINUTES))
        chart = data.add_series(chart, series)
    if not chart:  # no queue yet: an empty hour, still ending now
        chart = data.minutes_rows(await inspector.throughput("default", minutes=CHART_MINUTES))
    return {"queues": queues, "minutes": chart, "workers": len(await inspector.list_workers())}


async def overview(request: Request) -> Response:
    """``GET /``."""
    found = await overview_data(Dashboard.of(request))
    return page(request, "overview.html", title="Queues", states=data.STATES, **found)


routes = [Route("/", overview, methods=["GET"], name="overview")]
