"""Workflow steps seen and changed from outside the worker, on SQLite.

:func:`get_tasks` reads every step's task of a workflow in one transaction (the inspector's
``get_workflow``); the inspector's archive and delete of a step's task fail its workflow in the
transaction that archives or deletes it (:func:`step_archived`, :func:`step_deleted`), as an
archive by the worker does (:func:`conveyor.brokers.sqlite.workflows.fail_step`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from conveyor.brokers.sqlite import rows, workflows
from conveyor.brokers.sqlite.queries import queries
from conveyor.brokers.sqlite.store import Store
from conveyor.brokers.workflows import parse_step_task_id
from conveyor.message import TaskInfo

__all__ = ["ARCHIVED_ERROR", "DELETED_ERROR", "get_tasks", "step_archived", "step_deleted"]

logger = logging.getLogger(__name__)

ARCHIVED_ERROR = "archived by the inspector"
"""A step's error when the inspector archived its task (unless the task had a last error)."""
DELETED_ERROR = "step deleted"
"""A step's error when the inspector deleted its task (or its queue)."""


def get_tasks(store: Store, tasks: Sequence[tuple[str, str]]) -> list[TaskInfo | None]:
    """Every named task in one read transaction; ``None`` for one missing or undecodable."""
    found: list[TaskInfo | None] = []
    with store.read():
        for queue, task_id in tasks:
            hit = store.fetch(queries()["get_task"], (queue, task_id))
            try:
                found.append(rows.task_info(hit[0]) if hit else None)
            except rows.UndecodableRowError as exc:
                logger.warning("task %s cannot be decoded: %s", task_id, exc)
                found.append(None)
    return found


def step_archived(store: Store, task_id: str, last_error: str | None, now: float) -> bool:
    """Inside the write transaction that archived ``task_id``: fail its workflow, if a step.

    Returns whether it was one (its error callbacks may be stored: wake the workers after the
    commit)."""
    if parse_step_task_id(task_id) is None:
        return False
    workflows.fail_step(store, task_id, last_error or ARCHIVED_ERROR, now)
    return True


def step_deleted(store: Store, task_id: str, now: float) -> bool:
    """Inside the write transaction that deleted ``task_id``: fail its workflow, if a step
    (returns whether it was one, as :func:`step_archived`)."""
    if parse_step_task_id(task_id) is None:
        return False
    workflows.fail_step(store, task_id, DELETED_ERROR, now)
    return True


# The workflow steps among a queue's tasks (in one state, or in any for a whole queue).
_STEPS_IN_STATE = (
    "SELECT id, last_error FROM tasks WHERE queue = ? AND state = ? AND id LIKE 'wf.%'"
)
_STEPS_IN_QUEUE = "SELECT id, last_error FROM tasks WHERE queue = ? AND id LIKE 'wf.%'"


def steps_in(store: Store, queue: str, state: str | None) -> list[tuple[str, str | None]]:
    """``(task id, last error)`` of the workflow steps in ``queue`` (in ``state``, if given),
    read inside the write transaction that is about to archive or delete them."""
    if state is None:
        found = store.conn.execute(_STEPS_IN_QUEUE, (queue,)).fetchall()
    else:
        found = store.conn.execute(_STEPS_IN_STATE, (queue, state)).fetchall()
    return [(str(task_id), error) for task_id, error in found]
