"""Schedule entries: what code defines (:class:`ScheduleEntry`) and what the inspector shows
(:class:`ScheduleInfo`).

The stored form and its conversions are in :mod:`conveyor.scheduling.stored`; what a stored
entry fires at given times (its tasks' and workflows' ids) in :mod:`conveyor.scheduling.fires`.
Their public names are importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor.brokers.schedules import ScheduleRecord
from conveyor.errors import ConfigError
from conveyor.message import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    JSONValue,
    Payload,
    decode_payload,
    encode_payload,
    to_datetime,
    validate_name,
)
from conveyor.options import TaskOptions
from conveyor.scheduling.fires import (
    messages_for,
    schedule_task_id,
    schedule_workflow_id,
    workflows_for,
)
from conveyor.scheduling.spec import FireSpec, MissedPolicy, parse_missed
from conveyor.scheduling.stored import (
    ScheduleTarget,
    WorkflowTarget,
    encoding_of,
    new_record,
    spec_of,
    target_of,
)

__all__ = [
    "ScheduleEntry",
    "ScheduleInfo",
    "ScheduleTarget",
    "WorkflowTarget",
    "encoding_of",
    "messages_for",
    "new_entry",
    "new_record",
    "refuse_per_fire_options",
    "schedule_task_id",
    "schedule_workflow_id",
    "spec_of",
    "target_of",
    "workflows_for",
]


def refuse_per_fire_options(options: TaskOptions) -> None:
    """Refuse the options a schedule cannot take: they differ per fire.

    Raises:
        ConfigError: ``task_id``, ``process_at`` or ``process_in`` is set.
    """
    for bad in ("task_id", "process_at", "process_in"):
        if getattr(options, bad) is not None:
            raise ConfigError(f"a schedule cannot take the option {bad!r}: it differs per fire")


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
    refuse_per_fire_options(options)
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
