"""Schedule entries: what code defines (:class:`ScheduleEntry`), what the inspector shows
(:class:`ScheduleInfo`), and the conversions to and from the stored record.

An entry is stored as a task type, an encoded payload and enqueue options (see
:class:`~conveyor.brokers.schedules.ScheduleRecord`). A task function or a signature becomes
that directly; a workflow (chain, group, chord, or a signature with callbacks) is compiled once
into its graph, stored as the payload with ``"target"`` in the options, and each fire stores
that graph under a workflow id of its own (:func:`schedule_workflow_id`).
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.brokers.schedules import ScheduleRecord
from conveyor.brokers.workflows import DEFAULT_WORKFLOW_RETENTION_S, NewWorkflow
from conveyor.errors import ConfigError, PayloadTooLargeError
from conveyor.message import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Encoding,
    JSONValue,
    Payload,
    TaskMessage,
    decode_payload,
    encode_payload,
    to_datetime,
    validate_name,
)
from conveyor.options import MessageTemplate, TaskOptions, unique_key
from conveyor.scheduling.spec import FireSpec, MissedPolicy, parse_missed
from conveyor.workflows.compile import rebind_workflow

__all__ = [
    "ScheduleEntry",
    "ScheduleInfo",
    "ScheduleTarget",
    "WorkflowTarget",
    "messages_for",
    "schedule_task_id",
    "schedule_workflow_id",
    "target_of",
    "workflows_for",
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleEntry:
    """A schedule defined in code with ``app.schedule(...)`` or ``@app.periodic(...)``.

    Attributes:
        name: unique per app; the task type unless given.
        task_type: the task it enqueues.
        payload: the task's payload (a task function's arguments: ``{}``).
        spec: when it fires.
        missed: what to do with fire times missed while no scheduler ran.
        options: the enqueue options each task gets (queue, max_retry, timeout, ...).
        workflow: for a workflow target, its compiled graph (the steps carry their options);
            ``None`` for one task.
    """

    name: str
    task_type: str
    payload: Payload
    spec: FireSpec
    missed: MissedPolicy
    options: TaskOptions
    workflow: WorkflowTarget | None = None

    @property
    def target(self) -> ScheduleTarget:
        """What the entry fires: one task or a kind of workflow."""
        return ScheduleTarget.TASK if self.workflow is None else self.workflow.kind

    @property
    def cron(self) -> str | None:
        """The cron expression, or ``None`` for an interval."""
        return self.spec.cron

    @property
    def every(self) -> timedelta | None:
        """The interval, or ``None`` for a cron expression."""
        return self.spec.every

    @property
    def tz(self) -> str:
        """The time zone of the cron expression."""
        return self.spec.tz

    def record(
        self,
        *,
        owner: str | None,
        next_fire_at: float,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> ScheduleRecord:
        """The record to store, with a fresh revision and its first fire time."""
        return new_record(
            name=self.name,
            task_type=self.task_type,
            payload=self.payload,
            spec=self.spec,
            missed=self.missed,
            options=self.options,
            owner=owner,
            next_fire_at=next_fire_at,
            max_payload_bytes=max_payload_bytes,
            workflow=self.workflow,
        )


def new_entry(
    *,
    name: str,
    task_type: str,
    payload: Payload,
    cron: str | None,
    every: float | timedelta | None,
    tz: str,
    missed: str,
    options: TaskOptions,
    workflow: WorkflowTarget | None = None,
) -> ScheduleEntry:
    """Check every part of an entry and build it.

    Raises:
        ConfigError: a bad name, cron expression, interval, time zone or ``missed`` value,
            or an option a schedule cannot take (``task_id``, ``process_at``, ``process_in``).
    """
    validate_name(name, what="schedule name")
    spec = FireSpec.parse(cron=cron, every=every, tz=tz)
    policy = parse_missed(missed)
    for bad in ("task_id", "process_at", "process_in"):
        if getattr(options, bad) is not None:
            raise ConfigError(f"a schedule cannot take the option {bad!r}: it differs per fire")
    encode_payload(payload)  # not JSON: fail where the schedule is written
    return ScheduleEntry(
        name=name,
        task_type=task_type,
        payload=payload,
        spec=spec,
        missed=policy,
        options=options,
        workflow=workflow,
    )


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
    """The id of the workflow an entry stores for one fire time: a UUID derived from the name
    and the fire time, the same for every scheduler, so a second store of it is refused."""
    return str(uuid.uuid5(_WORKFLOW_IDS, schedule_task_id(name, fire_at)))


_WORKFLOW_IDS = uuid.UUID("6f0c9a52-2b1e-4d57-9b7e-3c51f0a8e2d4")  # fixed: ids must not change


def _options(record: ScheduleRecord) -> dict[str, Any]:
    found = json.loads(record.options)
    return found if isinstance(found, dict) else {}


def target_of(record: ScheduleRecord) -> ScheduleTarget:
    """What a stored entry fires (``TASK`` for anything unknown)."""
    try:
        return ScheduleTarget(_options(record).get("target", "task"))
    except (ValueError, TypeError):
        return ScheduleTarget.TASK


def workflows_for(record: ScheduleRecord, fire_times: list[float]) -> tuple[NewWorkflow, ...]:
    """The workflows of a workflow entry for these fire times (one each, ids from
    :func:`schedule_workflow_id`).

    Raises:
        PayloadError: the stored graph is damaged.
    """
    retention = float(_options(record).get("workflow_retention_s", DEFAULT_WORKFLOW_RETENTION_S))
    return tuple(
        rebind_workflow(
            record.payload, schedule_workflow_id(record.name, at), retention_s=retention
        )
        for at in fire_times
    )


def messages_for(record: ScheduleRecord, fire_times: list[float]) -> tuple[TaskMessage, ...]:
    """The task messages of ``record`` for these fire times (one each)."""
    opts = _options(record)
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleInfo:
    """A schedule entry as the inspector shows it.

    Attributes:
        name: the entry's name.
        task_type: the task it enqueues.
        payload: the task's payload, decoded.
        cron: the cron expression, or ``None``.
        every: the interval, or ``None``.
        tz: the time zone of the cron expression.
        missed: ``once``, ``skip`` or ``all``.
        next_fire_at: the next fire time (in the past when no scheduler has run since);
            ``None`` while paused.
        last_fire_at: the latest fire time handled, or ``None``.
        last_task_id: the id of the last task it enqueued, or ``None``.
        paused: whether it is paused.
        queue: the queue its tasks go to.
        owner: the app group that defines it in code, or ``None`` when it was added with the
            inspector.
        target: what it fires: one task, or a chain, group, chord or linked signature (a
            workflow, whose first step's type and queue are ``task_type`` and ``queue``; its
            ``payload`` is ``None`` and ``last_task_id`` is the last workflow's id).
    """

    name: str
    task_type: str
    payload: JSONValue
    cron: str | None
    every: timedelta | None
    tz: str
    missed: MissedPolicy
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_task_id: str | None
    paused: bool
    queue: str
    owner: str | None
    target: ScheduleTarget = ScheduleTarget.TASK

    @property
    def code_defined(self) -> bool:
        """Whether an app defines it in code (a starting scheduler may remove it)."""
        return self.owner is not None

    @classmethod
    def from_record(cls, record: ScheduleRecord) -> ScheduleInfo:
        """The info of a stored record."""
        target = target_of(record)
        try:
            payload = decode_payload(record.payload, record.encoding)
        except (TypeError, ValueError):  # a damaged payload must not hide the whole list
            payload = None
        if target is not ScheduleTarget.TASK:
            payload = None  # the stored graph is no task's payload
        try:
            missed = MissedPolicy(record.missed)
        except ValueError:
            missed = MissedPolicy.ONCE
        return cls(
            name=record.name,
            task_type=record.task_type,
            payload=payload,
            cron=record.cron,
            every=None if record.every_us is None else timedelta(microseconds=record.every_us),
            tz=record.tz,
            missed=missed,
            next_fire_at=None if record.paused else to_datetime(record.next_fire_at),
            last_fire_at=to_datetime(record.last_fire_at),
            last_task_id=record.last_task_id,
            paused=record.paused,
            queue=record.queue,
            owner=record.owner,
            target=target,
        )


def encoding_of(value: str) -> Encoding:
    """The stored encoding name as an :class:`Encoding` (JSON for anything unknown)."""
    return Encoding.BYTES if value == Encoding.BYTES.value else Encoding.JSON
