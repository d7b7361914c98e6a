"""Enqueueing workflows and waiting for results: what the clients and the inspector call."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from conveyor.brokers.protocol import Broker
from conveyor.brokers.results import ResultWaitBroker
from conveyor.brokers.workflow_engine import evaluate, parse_graph
from conveyor.brokers.workflows import FINISHED, WorkflowBroker, WorkflowState, initial_record
from conveyor.errors import (
    ConfigError,
    ResultTimeoutError,
    TaskFailedError,
    TaskNotFoundError,
)
from conveyor.message import JSONValue, TaskInfo, TaskState
from conveyor.options import Duration
from conveyor.workflows.canvas import Canvas
from conveyor.workflows.compile import BuildMessage, compile_with_graph
from conveyor.workflows.info import WorkflowInfo

__all__ = ["enqueue_workflow", "retention_seconds", "wait_for", "workflows_of"]

# A broker that cannot wake a task's waiter (no ResultWaitBroker) is read again at these growing
# intervals: quick for short tasks, gentle on the broker for long ones.
_TASK_POLL_FIRST_S = 0.005
_TASK_POLL_MAX_S = 0.25


def workflows_of(broker: Broker) -> WorkflowBroker:
    """The broker's workflow half.

    Raises:
        ConfigError: the broker cannot store workflows.
    """
    if not isinstance(broker, WorkflowBroker):
        raise ConfigError(f"{type(broker).__name__} does not support workflows")
    return broker


def retention_seconds(retention: Duration) -> float:
    """A workflow retention as seconds (zero or more)."""
    seconds = retention.total_seconds() if isinstance(retention, timedelta) else float(retention)
    if not seconds >= 0:
        raise ConfigError(f"workflow retention must be zero or more seconds, not {retention!r}")
    return seconds


async def enqueue_workflow(
    broker: Broker, build: BuildMessage, canvas: Canvas, retention: Duration
) -> WorkflowInfo:
    """Compile and store ``canvas``; return its info as stored (state pending), built from
    what was stored rather than read back when the broker says when it was created."""
    store = workflows_of(broker)
    new, graph = compile_with_graph(canvas, build, retention_s=retention_seconds(retention))
    created = await store.create_workflow(new)
    if created is None:
        return WorkflowInfo.from_record(await store.load_workflow(new.id))
    return WorkflowInfo.from_record(initial_record(new, created), graph=graph)


def _seconds(timeout: Duration) -> float:
    return timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)


async def wait_for(broker: Broker, info: TaskInfo | WorkflowInfo, limit: Duration) -> JSONValue:
    """Wait for the result of a task (enqueued with a retention) or a workflow.

    Raises:
        ResultTimeoutError: no result within ``limit``.
        TaskFailedError: the task was archived, or the workflow failed or was cancelled.
        ConfigError: a task enqueued without a retention (its result is never kept).
    """
    deadline = time.monotonic() + _seconds(limit)
    if isinstance(info, WorkflowInfo):
        return await _wait_workflow(workflows_of(broker), info.id, deadline)
    if info.retention <= timedelta(0):
        raise ConfigError(f"task {info.id!r} keeps no result: enqueue it with a retention")
    return await _wait_task(broker, info, deadline)


async def _wait_workflow(store: WorkflowBroker, workflow_id: str, deadline: float) -> JSONValue:
    while True:
        # Woken by the broker at each change; only the state is read until it finished.
        state = await store.wait_workflow(workflow_id, max(deadline - time.monotonic(), 0.0))
        if state not in FINISHED:
            raise ResultTimeoutError(f"workflow {workflow_id!r} did not finish in time")
        # The result only: no info of every step (a chord's thousand) is built for it.
        current = await store.load_workflow(workflow_id)
        if current.state is WorkflowState.SUCCEEDED:
            return evaluate(parse_graph(current.graph).result, current.steps)
        if current.state is WorkflowState.FAILED:
            raise TaskFailedError(task_id=current.failed_task or "", error=current.error or "")
        if current.state is WorkflowState.CANCELLED:
            raise TaskFailedError(
                f"workflow {workflow_id!r} was cancelled",
                task_id=current.failed_task or "",
                error="cancelled",
            )
        # Finished when asked, running again when read (a failed step re-run): wait again.


async def _wait_task(broker: Broker, info: TaskInfo, deadline: float) -> JSONValue:
    delay = _TASK_POLL_FIRST_S
    while True:
        remaining = deadline - time.monotonic()
        try:
            if isinstance(broker, ResultWaitBroker):
                # Woken by the broker when the task ends (every bundled backend).
                current = await broker.wait_task(info.queue, info.id, max(remaining, 0.0))
            else:
                current = await broker.get_task(info.queue, info.id)
        except TaskNotFoundError:
            raise TaskFailedError(
                f"task {info.id!r} is gone (deleted, or its result's retention ended)",
                task_id=info.id,
                error="deleted",
            ) from None
        if current.state is TaskState.COMPLETED:
            return current.result
        if current.state is TaskState.ARCHIVED:
            raise TaskFailedError(task_id=info.id, error=current.last_error or "")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ResultTimeoutError(f"task {info.id!r} did not complete in time")
        if not isinstance(broker, ResultWaitBroker):
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _TASK_POLL_MAX_S)
