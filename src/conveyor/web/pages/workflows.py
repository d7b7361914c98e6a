"""The workflows pages: workflows by state, page by page, and one workflow's steps as a tree."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.brokers.workflows import FINISHED, StepState, WorkflowState
from conveyor.errors import ConfigError
from conveyor.message import validate_name
from conveyor.web import data
from conveyor.web.params import PAGE_SIZE, int_param
from conveyor.web.render import page
from conveyor.web.state import Dashboard
from conveyor.workflows.info import WorkflowInfo, WorkflowStep

STATES: tuple[WorkflowState, ...] = tuple(WorkflowState)
"""The list page's tabs, after "all"."""

_GROUPS = {"header": "chord header", "body": "chord body"}


def _state_param(request: Request) -> WorkflowState | None:
    """The ``state`` query parameter: a workflow state, or ``None`` for every workflow.

    Raises:
        ConfigError: not a workflow state.
    """
    raw = request.query_params.get("state") or "all"
    if raw == "all":
        return None
    try:
        return WorkflowState(raw)
    except ValueError:
        names = ", ".join(["all", *(s.value for s in STATES)])
        raise ConfigError(f"unknown workflow state: must be one of {names}") from None


def _json_preview(value: object) -> str | None:
    return None if value is None else data.clip(json.dumps(value, ensure_ascii=False))


def workflow_row(info: WorkflowInfo) -> data.Row:
    """A workflow as the list shows it: state, how far it got, when, why it failed."""
    done = sum(1 for s in info.steps if s.state is StepState.SUCCEEDED)
    return {
        "id": info.id,
        "state": info.state.value,
        "steps": len(info.steps),
        "succeeded_steps": done,
        "first_type": info.steps[0].type if info.steps else None,
        "created_at": data.iso(info.created_at),
        "finished_at": data.iso(info.finished_at),
        "error": data.clip(info.error),
        "failed_task": info.failed_task,
        "cancellable": info.state not in FINISHED,
    }


def step_row(step: WorkflowStep) -> data.Row:
    """One step: where it sits, its task and that task's own state, its result or error."""
    task = step.task
    return {
        "position": step.position,
        "task_id": step.task_id,
        "queue": step.queue,
        "type": step.type,
        "state": step.state.value,
        "result_preview": _json_preview(step.result),
        "error": data.clip(step.error),
        "error_callback": step.error_callback,
        # The step's task as stored: pending, scheduled, active, retry, archived or completed.
        "task_state": None if task is None else task.state.value,
        "retried": None if task is None else task.retried,
        "last_error": None if task is None else data.clip(task.last_error),
        "next_process_at": None if task is None else data.iso(task.next_process_at),
    }


def _label(segment: str) -> str:
    """What a position segment is: a chord's part, a callback, or the n-th item."""
    if segment in _GROUPS:
        return _GROUPS[segment]
    if segment.startswith("link"):
        return "then"
    if segment.startswith("error"):
        return "on error"
    return f"#{segment}"


def step_tree(steps: list[data.Row]) -> list[data.Row]:
    """The steps nested by position (``0.1.header.2`` sits under ``0.1.header`` under ``0.1``).

    Each node is ``{"label", "step" (a step row or None), "children"}``; steps keep compile
    order among siblings. The canvas's root (position ``0``) is the one top node.
    """
    root: data.Row = {"label": "workflow", "step": None, "children": [], "index": {}}
    for step in steps:
        node = root
        for depth, segment in enumerate(step["position"].split(".")):
            index: dict[str, data.Row] = node["index"]
            if segment not in index:
                label = "workflow" if depth == 0 else _label(segment)
                index[segment] = {"label": label, "step": None, "children": [], "index": {}}
                node["children"].append(index[segment])
            node = index[segment]
        node["step"] = step
    return _strip(root["children"])


def _strip(nodes: list[data.Row]) -> list[data.Row]:
    return [
        {"label": n["label"], "step": n["step"], "children": _strip(n["children"])} for n in nodes
    ]


def workflow_detail(info: WorkflowInfo) -> data.Row:
    """Everything about a workflow: its summary, result, steps in order and as a tree."""
    steps = [step_row(s) for s in info.steps]
    return {
        **workflow_row(info),
        "error": info.error,
        "result": None if info.result is None else json.dumps(info.result, indent=2),
        "step_list": steps,
        "tree": step_tree(steps),
    }


async def workflows_data(request: Request) -> dict[str, Any]:
    """A page of workflows in a state (or all), newest first: the page and ``/api/`` alike."""
    inspector = await Dashboard.of(request).inspector()
    state = _state_param(request)
    number = int_param(request, "page", 1, 1, 100_000)
    found = await inspector.list_workflows(state, page=number, size=PAGE_SIZE)
    return {
        "state": "all" if state is None else state.value,
        "page": number,
        "size": PAGE_SIZE,
        "more": len(found) == PAGE_SIZE,
        "workflows": [workflow_row(w) for w in found],
    }


async def workflow_data(dashboard: Dashboard, workflow_id: str) -> data.Row:
    """One workflow; ``WorkflowNotFoundError`` (404) when it is not stored, a bad id a 400."""
    validate_name(workflow_id, what="workflow id")
    inspector = await dashboard.inspector()
    return workflow_detail(await inspector.get_workflow(workflow_id))


async def workflows_page(request: Request) -> Response:
    """``GET /workflows?state=...&page=...``."""
    found = await workflows_data(request)
    return page(request, "workflows.html", title="Workflows", states=STATES, **found)


async def workflow_page(request: Request) -> Response:
    """``GET /workflows/{workflow_id}``."""
    workflow_id = request.path_params["workflow_id"]
    found = await workflow_data(Dashboard.of(request), workflow_id)
    return page(request, "workflow.html", title=f"Workflow {workflow_id}", workflow=found)


routes = [
    Route("/workflows", workflows_page, methods=["GET"], name="workflows"),
    Route("/workflows/{workflow_id}", workflow_page, methods=["GET"], name="workflow"),
]
