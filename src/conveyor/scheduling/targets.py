"""What ``app.schedule(target, ...)`` accepts, turned into an entry.

* A task function, or a :class:`~conveyor.workflows.Signature` with no callbacks, is one task:
  its type, payload and options become the entry. Options are layered, each over the one before
  (:func:`scheduled_options`): the app's defaults, the task's defaults (a task function of the
  app), the task function's or the signature's own options, then the ``**options`` given to
  ``app.schedule``, which win.
* A workflow (chain, group, chord, or a signature with ``link`` / ``link_error`` callbacks) is
  compiled once into its graph, each step's options layered the same way; each fire stores the
  graph under a workflow id derived from the entry's name and the fire time.

A scheduled step has no parent, so ``fn.s(...)`` and ``fn.si(...)`` both work when the call is
complete without a parent's result.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from conveyor.brokers.workflows import DEFAULT_WORKFLOW_RETENTION_S
from conveyor.errors import ConfigError
from conveyor.message import Payload, Task, TaskMessage
from conveyor.options import MessageTemplate, TaskOptions, parse_options
from conveyor.scheduling.entry import (
    ScheduleEntry,
    ScheduleTarget,
    WorkflowTarget,
    new_entry,
    refuse_per_fire_options,
)
from conveyor.workflows.canvas import Canvas, Chain, Chord, Group, Signature
from conveyor.workflows.compile import compile_workflow

__all__ = ["Defaults", "canvas_entry", "canvas_kind", "scheduled_options", "task_entry"]

_TEMPLATE_ID = "template"  # the placeholder workflow id of a stored graph (rebound per fire)

Defaults = Callable[[str], TaskOptions]
"""The options a task type starts from: the app's defaults over its task function's."""


def scheduled_options(defaults: Defaults, task_type: str, *layers: TaskOptions) -> TaskOptions:
    """The options of one scheduled task: ``defaults(task_type)`` (the app's defaults, then its
    task's), then each of ``layers`` over the one before (the task function's or signature's
    own options, then those given to ``app.schedule``, which win)."""
    merged = defaults(task_type)
    for layer in layers:
        merged = merged.merged(layer)
    return merged


def task_entry(
    task_type: str,
    payload: Payload,
    own: TaskOptions,
    *,
    defaults: Defaults,
    name: str | None,
    cron: str | None,
    every: float | timedelta | None,
    tz: str,
    missed: str,
    options: TaskOptions,
) -> ScheduleEntry:
    """The entry that fires one task of ``task_type`` with ``payload``; its options are
    :func:`scheduled_options` of ``own`` (the task function's or signature's) and ``options``.

    Raises:
        ConfigError: a bad schedule part (as :func:`~conveyor.scheduling.entry.new_entry`).
    """
    return new_entry(
        name=task_type if name is None else name,
        task_type=task_type,
        payload=payload,
        cron=cron,
        every=every,
        tz=tz,
        missed=missed,
        options=scheduled_options(defaults, task_type, own, options),
    )


def canvas_kind(canvas: Canvas) -> ScheduleTarget:
    """What ``canvas`` fires as: one task, or a kind of workflow.

    Raises:
        TypeError: ``canvas`` is not a signature, chain, group or chord.
    """
    if isinstance(canvas, Signature):
        linked = canvas.links or canvas.error_links
        return ScheduleTarget.LINKED if linked else ScheduleTarget.TASK
    if isinstance(canvas, Chain):
        return ScheduleTarget.CHAIN
    if isinstance(canvas, Group):
        return ScheduleTarget.GROUP
    if isinstance(canvas, Chord):
        return ScheduleTarget.CHORD
    raise TypeError(
        "schedule a task function, a signature, a chain, a group or a chord, "
        f"not {type(canvas).__name__}"
    )


def canvas_entry(
    canvas: Canvas,
    *,
    defaults: Defaults,
    name: str | None,
    cron: str | None,
    every: float | timedelta | None,
    tz: str,
    missed: str,
    options: TaskOptions,
    max_payload_bytes: int,
) -> ScheduleEntry:
    """The entry that fires ``canvas`` (see the module docstring for the option layering).

    Raises:
        TypeError: not a canvas; a signature whose call needs a parent's result; a step
            option a workflow refuses.
        ConfigError: a bad schedule part (as :func:`~conveyor.scheduling.entry.new_entry`), or
            a workflow with no ``name``.
    """
    kind = canvas_kind(canvas)
    refuse_per_fire_options(options)
    if isinstance(canvas, Signature) and kind is ScheduleTarget.TASK:
        if canvas.decorated and not canvas.immutable and not canvas.fits_alone:
            raise TypeError(
                f"{canvas.task_type}: this call needs a parent's result, and a scheduled task "
                "has no parent (give every required argument)"
            )
        own = parse_options(canvas.call_options)
        return task_entry(
            canvas.task_type,
            canvas.payload,
            own,
            defaults=defaults,
            name=name,
            cron=cron,
            every=every,
            tz=tz,
            missed=missed,
            options=options,
        )

    def build(task: Task, call: TaskOptions) -> TaskMessage:
        merged = scheduled_options(defaults, task.type, call, options)
        return MessageTemplate.from_options(merged).build(task, max_payload_bytes)

    if name is None:
        raise ConfigError(f"a scheduled {kind.value} needs a name: app.schedule(..., name=...)")
    compiled = compile_workflow(
        canvas, build, retention_s=DEFAULT_WORKFLOW_RETENTION_S, workflow_id=_TEMPLATE_ID
    )
    first = compiled.first[0]
    workflow = WorkflowTarget(kind=kind, graph=compiled.graph, queue=first.queue)
    return new_entry(
        name=name,
        task_type=first.type,
        payload=None,
        cron=cron,
        every=every,
        tz=tz,
        missed=missed,
        options=defaults(first.type),
        workflow=workflow,
    )
