"""The stored form of a schedule entry (:class:`~conveyor.brokers.schedules.ScheduleRecord`):
what it fires, and the conversions between a definition and a record.

An entry is stored as a task type, an encoded payload and enqueue options. A task function or a
signature becomes that directly; a workflow (chain, group, chord, or a signature with callbacks)
is compiled once into its graph, stored as the payload with ``"target"`` in the options.
"""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from conveyor.brokers.schedules import ScheduleRecord
from conveyor.brokers.workflows import DEFAULT_WORKFLOW_RETENTION_S
from conveyor.errors import PayloadTooLargeError
from conveyor.message import DEFAULT_MAX_PAYLOAD_BYTES, Encoding, Payload, encode_payload
from conveyor.options import MessageTemplate, TaskOptions
from conveyor.scheduling.spec import FireSpec, MissedPolicy

__all__ = [
    "ScheduleTarget",
    "WorkflowTarget",
    "encoding_of",
    "new_record",
    "record_options",
    "spec_of",
    "target_of",
]


class ScheduleTarget(enum.StrEnum):
    """What a schedule entry fires: one task, or a workflow of a kind."""

    TASK = "task"
    """One task: a task function, a signature without callbacks, or a raw task type."""
    CHAIN = "chain"
    """A chain, stored and run as a workflow."""
    GROUP = "group"
    """A group, stored and run as a workflow."""
    CHORD = "chord"
    """A chord, stored and run as a workflow."""
    LINKED = "linked"
    """A signature with success or error callbacks (``link`` / ``link_error``): a workflow."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTarget:
    """A workflow an entry fires: its graph, compiled once under a placeholder id.

    Attributes:
        kind: chain, group, chord or linked.
        graph: the compiled graph (JSON), stored as the entry's payload.
        queue: the first step's queue (where the entry is kept on Redis).
        retention_s: how long each fired workflow is kept once finished.
    """

    kind: ScheduleTarget
    graph: bytes
    queue: str
    retention_s: float = DEFAULT_WORKFLOW_RETENTION_S


# TaskOptions a schedule may set: per-fire values (task_id, process_at, ...) make no sense.
_SCHEDULE_OPTIONS = ("max_retry", "timeout_s", "deadline", "retention_s", "unique_ttl_s")


def new_record(
    *,
    name: str,
    task_type: str,
    payload: Payload,
    spec: FireSpec,
    missed: MissedPolicy,
    options: TaskOptions,
    owner: str | None,
    next_fire_at: float,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    workflow: WorkflowTarget | None = None,
) -> ScheduleRecord:
    """A record for storage: the options are merged into message fields once, here (a
    workflow's steps carry theirs in its graph)."""
    fields: dict[str, object]
    if workflow is None:
        data, encoding = encode_payload(payload, limit=max_payload_bytes)
        template = MessageTemplate.from_options(options)
        fields = {k: getattr(template, k) for k in _SCHEDULE_OPTIONS}
        queue = template.queue
    else:
        if len(workflow.graph) > max_payload_bytes:
            raise PayloadTooLargeError(size=len(workflow.graph), limit=max_payload_bytes)
        data, encoding, queue = workflow.graph, Encoding.JSON, workflow.queue
        fields = {"target": workflow.kind.value, "workflow_retention_s": workflow.retention_s}
    return ScheduleRecord(
        name=name,
        task_type=task_type,
        queue=queue,
        payload=data,
        encoding=encoding,
        options=json.dumps(fields, sort_keys=True, separators=(",", ":")),
        cron=spec.cron,
        every_us=spec.every_us,
        tz=spec.tz,
        missed=missed.value,
        owner=owner,
        revision=uuid.uuid4().hex,
        next_fire_at=next_fire_at,
    )


def spec_of(record: ScheduleRecord) -> FireSpec:
    """The fire spec of a stored record.

    Raises:
        ConfigError: the stored definition is not valid (written by hand, or damaged).
    """
    every = None if record.every_us is None else timedelta(microseconds=record.every_us)
    return FireSpec.parse(cron=record.cron, every=every, tz=record.tz)


def record_options(record: ScheduleRecord) -> dict[str, Any]:
    """The stored options of ``record`` (empty when they are not a JSON object)."""
    found = json.loads(record.options)
    return found if isinstance(found, dict) else {}


def target_of(record: ScheduleRecord) -> ScheduleTarget:
    """What a stored entry fires (``TASK`` for anything unknown)."""
    try:
        return ScheduleTarget(record_options(record).get("target", "task"))
    except (ValueError, TypeError):
        return ScheduleTarget.TASK


def encoding_of(value: str) -> Encoding:
    """The stored encoding name as an :class:`Encoding` (JSON for anything unknown)."""
    return Encoding.BYTES if value == Encoding.BYTES.value else Encoding.JSON
