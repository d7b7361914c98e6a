"""The workers page: every live worker, its queues and the tasks it is running."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.web.render import page
from conveyor.web.state import Dashboard


async def workers_data(dashboard: Dashboard) -> dict[str, Any]:
    """Every live worker: what the page and ``/api/workers`` show."""
    inspector = await dashboard.inspector()
    return {"workers": [w.to_dict() for w in await inspector.list_workers()]}


async def workers_page(request: Request) -> Response:
    """``GET /workers``."""
    found = await workers_data(Dashboard.of(request))
    return page(request, "workers.html", title="Workers", **found)


routes = [Route("/workers", workers_page, methods=["GET"], name="workers")]
