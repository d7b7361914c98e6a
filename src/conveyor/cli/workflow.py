"""``conveyor workflow ...``: list workflows, show one step by step, cancel one."""

from __future__ import annotations

import json

import click

from conveyor.brokers.workflows import WorkflowState
from conveyor.cli.inspect_commands import broker_option, echo_json, inspector_for, json_option
from conveyor.cli.task_commands import task_json as _task_json
from conveyor.workflows.info import WorkflowInfo, WorkflowStep

WORKFLOW_STATES = [s.value for s in WorkflowState]


@click.group(
    epilog="""\b
Examples:
  conveyor workflow ls --state running
  conveyor workflow show 0192f3c4-...
  conveyor workflow cancel 0192f3c4-..."""
)
def workflow() -> None:
    """List workflows, show one with each step's task, or cancel one."""


def step_json(step: WorkflowStep) -> dict[str, object]:
    """What ``--json`` prints for a step: where it sits, its state, and its task as stored."""
    return {
        "position": step.position,
        "task_id": step.task_id,
        "queue": step.queue,
        "type": step.type,
        "state": step.state.value,
        "error_callback": step.error_callback,
        "result": step.result,
        "error": step.error,
        "task": None if step.task is None else _task_json(step.task),
    }


def workflow_json(info: WorkflowInfo, *, steps: bool) -> dict[str, object]:
    """What ``--json`` prints for a workflow (its steps too for ``show``)."""
    data: dict[str, object] = {
        "id": info.id,
        "state": info.state.value,
        "steps_done": sum(1 for s in info.steps if s.state.value == "succeeded"),
        "steps_total": len(info.steps),
        "result": info.result,
        "error": info.error,
        "failed_task": info.failed_task,
        "created_at": info.created_at,
        "finished_at": info.finished_at,
    }
    if steps:
        data["steps"] = [step_json(s) for s in info.steps]
    return data


@workflow.command("ls", epilog="\b\nExamples:\n  conveyor workflow ls --state failed --json")
@click.option("--state", "-s", type=click.Choice(WORKFLOW_STATES), default=None)
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--size", type=click.IntRange(1, 1000), default=20, show_default=True)
@broker_option
@json_option
def workflow_ls(state: str | None, page: int, size: int, broker: str | None, as_json: bool) -> None:
    """List one page of workflows, newest first (in a given state, or any)."""
    with inspector_for(broker) as inspector:
        found = inspector.list_workflows(state, page=page, size=size)
    if as_json:
        echo_json([workflow_json(info, steps=False) for info in found])
        return
    for info in found:
        done = sum(1 for s in info.steps if s.state.value == "succeeded")
        created = info.created_at.isoformat(timespec="seconds")
        click.echo(f"{info.id}  {info.state.value}  {done}/{len(info.steps)} steps  {created}")
    if not found:
        click.echo(f"no {state or ''} workflows (page {page})".replace("  ", " "))


@workflow.command("show", epilog="\b\nExamples:\n  conveyor workflow show 0192f3c4-... --json")
@click.argument("workflow_id", metavar="ID")
@broker_option
@json_option
def workflow_show(workflow_id: str, broker: str | None, as_json: bool) -> None:
    """Show a workflow and every step: its position, state, and its task's own state."""
    with inspector_for(broker) as inspector:
        info = inspector.get_workflow(workflow_id)
    if as_json:
        echo_json(workflow_json(info, steps=True))
        return
    click.echo(f"{'id:':<13}{info.id}")
    click.echo(f"{'state:':<13}{info.state.value}")
    click.echo(f"{'created_at:':<13}{info.created_at.isoformat()}")
    if info.finished_at is not None:
        click.echo(f"{'finished_at:':<13}{info.finished_at.isoformat()}")
    if info.error is not None:
        click.echo(f"{'error:':<13}{info.error}  (task {info.failed_task})")
    if info.result is not None:
        click.echo(f"{'result:':<13}{json.dumps(info.result)[:200]}")
    click.echo("steps:")
    for step in info.steps:
        click.echo("  " + _step_line(step))


def _step_line(step: WorkflowStep) -> str:
    """``0.1  enqueued  task=retry retried=2  add on default  wf.<id>.1  error=...``"""
    task = step.task
    parts = [step.position, step.state.value]
    if task is not None:
        parts.append(f"task={task.state.value} retried={task.retried}")
    parts.append(f"{step.type} on {step.queue}{' (error callback)' if step.error_callback else ''}")
    parts.append(step.task_id)
    error = step.error or (task.last_error if task is not None else None)
    if error:
        parts.append(f"error={error[:120]}")
    return "  ".join(parts)


@workflow.command("cancel", epilog="\b\nExamples:\n  conveyor workflow cancel 0192f3c4-...")
@click.argument("workflow_id", metavar="ID")
@broker_option
def workflow_cancel(workflow_id: str, broker: str | None) -> None:
    """Cancel a workflow: steps not yet started never start."""
    with inspector_for(broker) as inspector:
        cancelled = inspector.cancel_workflow(workflow_id)
    click.echo(f"cancelled {workflow_id}" if cancelled else f"{workflow_id} had already finished")
