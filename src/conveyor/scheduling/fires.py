"""What a stored entry fires at given fire times: one task each, or one workflow each, under
ids derived from the entry's name and the fire time (the same for every scheduler)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from conveyor.brokers.schedules import ScheduleRecord
from conveyor.brokers.workflows import DEFAULT_WORKFLOW_RETENTION_S, NewWorkflow
from conveyor.message import TaskMessage
from conveyor.options import unique_key
from conveyor.scheduling.stored import record_options
from conveyor.workflows.compile import rebind_workflow

__all__ = ["messages_for", "schedule_task_id", "schedule_workflow_id", "workflows_for"]


def schedule_task_id(name: str, fire_at: float) -> str:
    """The id of the task an entry enqueues for one fire time: ``<name>:<UTC time>``.

    The same for every scheduler, so a fire time's task is recognisable (and a second enqueue
    of it is refused as an id conflict). A name too long to leave room for the time is
    shortened to a hash of itself.
    """
    when = datetime.fromtimestamp(fire_at, UTC)
    stamp = when.strftime("%Y%m%dT%H%M%S")
    if when.microsecond:
        stamp += f".{when.microsecond:06d}"
    if len(name) > 200:
        name = "s-" + hashlib.sha256(name.encode()).hexdigest()[:40]
    return f"{name}:{stamp}Z"


def schedule_workflow_id(name: str, fire_at: float) -> str:
    """The id of the workflow an entry fires for one fire time: a UUID derived from the name
    and the fire time, the same for every scheduler, so a second creation of it stores
    nothing."""
    return str(uuid.uuid5(_WORKFLOW_IDS, schedule_task_id(name, fire_at)))


_WORKFLOW_IDS = uuid.UUID("6f0c9a52-2b1e-4d57-9b7e-3c51f0a8e2d4")  # fixed: ids must not change


def workflows_for(record: ScheduleRecord, fire_times: list[float]) -> tuple[NewWorkflow, ...]:
    """The workflows of a workflow entry for these fire times (one each, ids from
    :func:`schedule_workflow_id`).

    Raises:
        PayloadError: the stored graph is damaged.
    """
    retention = float(
        record_options(record).get("workflow_retention_s", DEFAULT_WORKFLOW_RETENTION_S)
    )
    return tuple(
        rebind_workflow(
            record.payload, schedule_workflow_id(record.name, at), retention_s=retention
        )
        for at in fire_times
    )


def messages_for(record: ScheduleRecord, fire_times: list[float]) -> tuple[TaskMessage, ...]:
    """The task messages of ``record`` for these fire times (one each)."""
    opts = record_options(record)
    ttl = opts.get("unique_ttl_s")
    key = None if ttl is None else unique_key(record.task_type, record.payload, record.queue)
    return tuple(
        TaskMessage(
            id=schedule_task_id(record.name, at),
            type=record.task_type,
            queue=record.queue,
            payload=record.payload,
            encoding=record.encoding,
            max_retry=int(opts.get("max_retry", 25)),
            timeout_s=opts.get("timeout_s"),
            deadline=opts.get("deadline"),
            retention_s=float(opts.get("retention_s", 0.0)),
            unique_key=key,
            unique_ttl_s=ttl,
        )
        for at in fire_times
    )
