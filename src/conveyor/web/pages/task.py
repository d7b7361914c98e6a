"""A task's page: payload and result pretty-printed, its error and retry history, its pipeline log,
the workflow it is a step of, and its actions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.errors import WorkflowNotFoundError
from conveyor.inspector import AsyncInspector
from conveyor.message import TaskInfo
from conveyor.web import data
from conveyor.web.pages.actions import ACTIONS_BY_STATE, TASK_ACTIONS
from conveyor.web.render import page
from conveyor.web.state import Dashboard


async def _workflow_of(inspector: AsyncInspector, info: TaskInfo) -> data.Row | None:
    """The workflow a step's task belongs to: its id, state and this step's place in it."""
    if info.workflow_id is None:
        return None
    try:
        workflow = await inspector.get_workflow(info.workflow_id)
    except WorkflowNotFoundError:  # purged after its retention: the id is all there is
        return {"id": info.workflow_id, "state": None, "position": None, "step_state": None}
    step = next((s for s in workflow.steps if s.task_id == info.id), None)
    return {
        "id": workflow.id,
        "state": workflow.state.value,
        "position": None if step is None else step.position,
        "step_state": None if step is None else step.state.value,
    }


async def task_data(dashboard: Dashboard, queue: str, task_id: str) -> data.Row:
    """Everything about one task (page and ``/api/`` alike); ``TaskNotFoundError`` if gone.

    Includes its failed attempts (``history``, oldest first, the last 20), the pipeline result
    log (``result_log``, empty for other tasks), for a workflow step the workflow it belongs
    to (``workflow``, else ``None``) and the actions its state allows (``actions``).
    """
    inspector = await dashboard.inspector()
    info = await inspector.get_task(queue, task_id)
    return {
        **data.task_detail(info),
        "actions": list(ACTIONS_BY_STATE[info.state]),
        "result_log": [
            {"step": e.step, "state": e.state.value, "attempts": e.attempts, "error": e.error}
            for e in info.result_log
        ],
        "history": [
            {"attempt": r.attempt, "failed_at": data.iso(r.failed_at), "error": r.error}
            for r in info.history
        ],
        "workflow": await _workflow_of(inspector, info),
    }


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
        verbs=TASK_ACTIONS,
    )


routes = [Route("/queues/{queue}/tasks/{task_id}", task_page, methods=["GET"], name="task")]
