"""A task's page: payload and result pretty-printed, its error and retries, and its actions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.message import TaskState
from conveyor.web import data
from conveyor.web.pages.actions import ACTIONS_BY_STATE
from conveyor.web.render import page
from conveyor.web.state import Dashboard


async def task_data(dashboard: Dashboard, queue: str, task_id: str) -> data.Row:
    """Everything about one task (page and ``/api/`` alike); ``TaskNotFoundError`` if gone."""
    inspector = await dashboard.inspector()
    return data.task_detail(await inspector.get_task(queue, task_id))


async def task_page(request: Request) -> Response:
    """``GET /queues/{queue}/tasks/{task_id}``."""
    queue, task_id = request.path_params["queue"], request.path_params["task_id"]
    task = await task_data(Dashboard.of(request), queue, task_id)
    return page(
        request,
        "task.html",
        title=f"Task {task_id}",
        queue=queue,
        task=task,
        actions=ACTIONS_BY_STATE[TaskState(task["state"])],
    )


routes = [Route("/queues/{queue}/tasks/{task_id}", task_page, methods=["GET"], name="task")]
