"""The actions: plain HTML forms that POST (they work without JavaScript).

Every action is refused in read-only mode and without the CSRF token (403, nothing changed).
Destructive ones (delete, archive, delete a queue, cancel a task or a workflow) first answer
with a confirmation page whose form repeats the request with ``confirm=yes``; only that second
POST acts. Then the browser is sent back (303) to the page it came from, with a notice of
what was done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from conveyor.inspector import AsyncInspector
from conveyor.message import TaskState, validate_name
from conveyor.web.params import state_param
from conveyor.web.render import base_path, page
from conveyor.web.security import CSRF_FIELD, csrf_ok
from conveyor.web.state import Dashboard

MAX_FORM_BYTES = 16_384  # a form here holds a token, a path and a flag: nothing larger is ours
DESTRUCTIVE = frozenset({"archive", "delete", "delete-queue", "cancel", "cancel-workflow"})

ACTIONS_BY_STATE: dict[TaskState, tuple[str, ...]] = {
    TaskState.PENDING: ("archive", "delete"),
    TaskState.SCHEDULED: ("run", "archive", "delete"),
    TaskState.ACTIVE: ("cancel",),
    TaskState.RETRY: ("run", "archive", "delete"),
    TaskState.ARCHIVED: ("run", "delete"),
    TaskState.COMPLETED: ("delete",),
}
"""Which actions apply to a task in each state, one task or all of a state (as the Inspector
allows them); the pages show only these buttons."""

TASK_ACTIONS: tuple[str, ...] = ("run", "archive", "delete", "cancel")
"""Every action on one task, in the order the task page shows their buttons."""

BULK_ACTIONS = frozenset({"run", "archive", "delete"})
"""The actions that also apply to every task of a state at once (cancel is one task at a time)."""


@dataclass(frozen=True, slots=True)
class Action:
    """One action asked for: what it does (for the confirmation page) and how to do it."""

    verb: str
    description: str
    run: Callable[[AsyncInspector], Awaitable[int | None]]
    back: str  # the page to return to, under the mount point


async def _form(request: Request) -> dict[str, str] | Response:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return PlainTextResponse("form too large", status_code=413)
    return dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))


def _safe_next(request: Request, wanted: str | None, fallback: str) -> str:
    """Where to go after the action: the page named by ``next`` if it is one of ours."""
    base = base_path(request)
    if wanted:
        parts = urlsplit(wanted)
        if (
            not parts.scheme
            and not parts.netloc
            and parts.path.startswith(base + "/")
            and not parts.path.startswith("//")
            and "\\" not in wanted
        ):
            return wanted
    return fallback


def _with_notice(target: str, verb: str, count: int | None) -> str:
    parts = urlsplit(target)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("done", "count")]
    query.append(("done", verb))
    if count is not None:
        query.append(("count", str(count)))
    return parts._replace(query=urlencode(query)).geturl()


async def _perform(request: Request, action: Action) -> Response:
    dashboard = Dashboard.of(request)
    if dashboard.read_only:
        return PlainTextResponse("read-only dashboard: actions are disabled", status_code=403)
    form = await _form(request)
    if isinstance(form, Response):
        return form
    if not csrf_ok(request, form.get(CSRF_FIELD)):
        return PlainTextResponse("missing or wrong CSRF token: nothing changed", status_code=403)
    back = _safe_next(request, form.get("next"), action.back)
    if action.verb in DESTRUCTIVE and form.get("confirm") != "yes":
        return page(
            request,
            "confirm.html",
            title="Confirm",
            action=action,
            next_url=back,
            post_to=request.url.path,
        )
    count = await action.run(await dashboard.inspector())
    return RedirectResponse(_with_notice(back, action.verb, count), status_code=303)


def _queue_page(request: Request, queue: str) -> str:
    return f"{base_path(request)}/queues/{quote(queue, safe='')}"


def _names(request: Request, *keys: str) -> list[str]:
    """Path parameters that must be valid names: a bad one is a 400 before anything else."""
    return [validate_name(request.path_params[key], what=key.replace("_", " ")) for key in keys]


async def queue_action(request: Request) -> Response:
    """``POST /queues/{queue}/{pause|unpause|delete}``."""
    [queue], verb = _names(request, "queue"), request.path_params["verb"]
    back = _queue_page(request, queue)

    async def pause(inspector: AsyncInspector) -> None:
        await inspector.pause_queue(queue)

    async def unpause(inspector: AsyncInspector) -> None:
        await inspector.unpause_queue(queue)

    async def delete(inspector: AsyncInspector) -> None:
        await inspector.delete_queue(queue, force=True)

    if verb == "pause":
        action = Action("pause", f"Pause queue {queue}", pause, back)
    elif verb == "unpause":
        action = Action("unpause", f"Resume queue {queue}", unpause, back)
    elif verb == "delete":
        description = f"Delete queue {queue} and every task in it (refused while a task is active)"
        action = Action("delete-queue", description, delete, f"{base_path(request)}/")
    else:
        return PlainTextResponse("unknown action", status_code=404)
    return await _perform(request, action)


async def task_action(request: Request) -> Response:
    """``POST /queues/{queue}/tasks/{task_id}/{run|archive|delete}``."""
    queue, task_id = _names(request, "queue", "task_id")
    verb = request.path_params["verb"]
    calls: dict[str, Callable[[AsyncInspector, str, str], Awaitable[None]]] = {
        "run": AsyncInspector.run_task,
        "archive": AsyncInspector.archive_task,
        "delete": AsyncInspector.delete_task,
        "cancel": AsyncInspector.cancel_task,
    }
    call = calls.get(verb)
    if call is None:
        return PlainTextResponse("unknown action", status_code=404)

    async def run(inspector: AsyncInspector) -> None:
        await call(inspector, queue, task_id)

    # After a delete the task page is gone: go back to the queue.
    back = (
        f"{_queue_page(request, queue)}/tasks/{task_id}"
        if verb != "delete"
        else _queue_page(request, queue)
    )
    description = f"{verb.capitalize()} task {task_id} of queue {queue}"
    if verb == "cancel":
        description += " (its worker stops it within a second; it ends archived, not retried)"
    return await _perform(request, Action(verb, description, run, back))


async def state_action(request: Request) -> Response:
    """``POST /queues/{queue}/states/{state}/{run|archive|delete}``: every task of a state."""
    [queue], verb = _names(request, "queue"), request.path_params["verb"]
    state = state_param(request)
    calls = {
        "run": AsyncInspector.run_all_tasks,
        "archive": AsyncInspector.archive_all_tasks,
        "delete": AsyncInspector.delete_all_tasks,
    }
    call = calls.get(verb)
    if call is None or verb not in ACTIONS_BY_STATE[state] or verb not in BULK_ACTIONS:
        return PlainTextResponse("unknown action", status_code=404)

    async def run(inspector: AsyncInspector) -> int:
        return await call(inspector, queue, state)

    back = f"{_queue_page(request, queue)}?{urlencode({'state': state.value})}"
    description = f"{verb.capitalize()} every {state.value} task of queue {queue}"
    return await _perform(request, Action(verb, description, run, back))


async def schedule_action(request: Request) -> Response:
    """``POST /schedules/{name}/{pause|unpause}``."""
    name = validate_name(request.path_params["name"], what="schedule name")
    verb = request.path_params["verb"]
    back = f"{base_path(request)}/schedules"

    async def pause(inspector: AsyncInspector) -> None:
        await inspector.pause_schedule(name)

    async def unpause(inspector: AsyncInspector) -> None:
        await inspector.unpause_schedule(name)

    if verb == "pause":
        action = Action("pause-schedule", f"Pause schedule {name}", pause, back)
    elif verb == "unpause":
        action = Action("unpause-schedule", f"Resume schedule {name}", unpause, back)
    else:
        return PlainTextResponse("unknown action", status_code=404)
    return await _perform(request, action)


async def workflow_action(request: Request) -> Response:
    """``POST /workflows/{workflow_id}/cancel``."""
    [workflow_id] = _names(request, "workflow_id")
    if request.path_params["verb"] != "cancel":
        return PlainTextResponse("unknown action", status_code=404)

    async def cancel(inspector: AsyncInspector) -> None:
        await inspector.cancel_workflow(workflow_id)

    back = f"{base_path(request)}/workflows/{quote(workflow_id, safe='')}"
    description = (
        f"Cancel workflow {workflow_id}: steps not yet started never start (running ones finish)"
    )
    return await _perform(request, Action("cancel-workflow", description, cancel, back))


routes = [
    Route("/queues/{queue}/{verb}", queue_action, methods=["POST"]),
    Route("/queues/{queue}/tasks/{task_id}/{verb}", task_action, methods=["POST"]),
    Route("/queues/{queue}/states/{state}/{verb}", state_action, methods=["POST"]),
    Route("/schedules/{name}/{verb}", schedule_action, methods=["POST"]),
    Route("/workflows/{workflow_id}/{verb}", workflow_action, methods=["POST"]),
]
