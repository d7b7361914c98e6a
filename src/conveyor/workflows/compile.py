"""Compiling a canvas into the stored graph (JSON) of :mod:`conveyor.brokers.workflow_engine`.

One rule passes results on: each item is compiled with a *source*, where its input comes from
(the previous item's output), and returns its own output source. A signature's output is its
step; a chain's is its last item's; a group's is the list of its items' outputs; a chord's is its
body's. So a group followed by a step is a chord, a group after a group gives each member the
first group's list, and nesting works to any depth with no special case.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from conveyor.brokers.workflow_engine import (
    Graph,
    Source,
    StepSpec,
    graph_json,
    parse_graph,
    start,
)
from conveyor.brokers.workflows import NewWorkflow, step_task_id
from conveyor.errors import PayloadError
from conveyor.message import (
    Encoding,
    JSONValue,
    Payload,
    Task,
    TaskMessage,
    decode_json,
    new_task_id,
    step_message,
)
from conveyor.options import NO_OPTIONS, TaskOptions, parse_options
from conveyor.workflows.canvas import Canvas, Chain, Chord, Group, Signature

__all__ = ["MAX_STEPS", "compile_with_graph", "compile_workflow", "rebind_workflow"]

MAX_STEPS = 100_000
"""The most steps one workflow may have (a bound on the stored graph's size)."""

BuildMessage = Callable[[Task, TaskOptions], TaskMessage]
"""Builds a step's message with the client's option layering (its defaults per task type)."""


def _deps(source: Source) -> list[int]:
    if source is None:
        return []
    if isinstance(source, int):
        return [source]
    return [d for s in source for d in _deps(s)]


@dataclass(slots=True)
class _Compiler:
    workflow_id: str
    build: BuildMessage
    steps: list[dict[str, JSONValue]] = field(default_factory=list)
    messages: list[TaskMessage] = field(default_factory=list)
    # Signatures' call options, parsed once per distinct set (a chord's members share theirs).
    parsed: dict[tuple[tuple[str, object], ...], TaskOptions] = field(default_factory=dict)

    def options(self, call: Mapping[str, object]) -> TaskOptions:
        """The call's options, checked as ``enqueue`` checks them (the step's task id is set
        on the message, not here)."""
        if not call:
            return NO_OPTIONS
        try:
            key = tuple(sorted(call.items()))
            hash(key)
        except TypeError:  # an unhashable value (headers): parsed each time
            return parse_options({**call, "task_id": None})
        found = self.parsed.get(key)
        if found is None:
            found = self.parsed[key] = parse_options({**call, "task_id": None})
        return found

    def item(self, item: Canvas, after: Source, position: str) -> Source:
        if isinstance(item, Signature):
            return self.signature(item, after, position, trigger=None)
        if isinstance(item, Chain):
            for i, sub in enumerate(item.items):
                after = self.item(sub, after, f"{position}.{i}")
            return after
        if isinstance(item, Group):
            return [self.item(sub, after, f"{position}.{i}") for i, sub in enumerate(item.items)]
        header = self.item(item.header, after, f"{position}.header")
        return self.item(item.body, header, f"{position}.body")

    def signature(self, sig: Signature, after: Source, position: str, trigger: int | None) -> int:
        index = len(self.steps)
        if index >= MAX_STEPS:
            raise ValueError(f"a workflow may have at most {MAX_STEPS} steps")
        takes = trigger is not None or after is not None  # it receives a value first
        prepend, payload = _payload_for(sig, takes)
        built = self.build(Task(sig.task_type, payload), self.options(sig.call_options))
        if built.unique_key is not None:
            raise TypeError("a workflow step cannot be unique (its type has a 'unique' default)")
        message = step_message(built, step_task_id(self.workflow_id, index))
        self.messages.append(message)
        is_bytes = message.encoding is Encoding.BYTES
        self.steps.append(
            {
                "id": message.id,
                "type": message.type,
                "queue": message.queue,
                "enc": message.encoding.value,
                "payload": (
                    base64.b64encode(message.payload).decode()
                    if is_bytes
                    else message.payload.decode()
                ),
                "max_retry": message.max_retry,
                "timeout_s": message.timeout_s,
                "deadline": message.deadline,
                "process_in_s": message.process_in_s,
                "process_at": message.process_at,
                "retention_s": message.retention_s,
                "deps": _deps(after) if trigger is None else [],
                "input": None if sig.immutable or trigger is not None else after,
                "trigger": trigger,
                "errbacks": [],
                "position": position,
                "prepend": prepend,
            }
        )
        for i, link in enumerate(sig.links):
            self.item(link, index, f"{position}.link{i}")
        errbacks: list[JSONValue] = []
        for i, err in enumerate(sig.error_links):
            errbacks.append(self.signature(err, None, f"{position}.error{i}", trigger=index))
        self.steps[index]["errbacks"] = errbacks
        return index


def _payload_for(sig: Signature, takes: bool) -> tuple[bool, Payload]:
    """Whether the step gets a value prepended, and its stored payload.

    Raises:
        TypeError: a task function's call does not fit where the step sits.
    """
    if not sig.decorated or sig.immutable:
        return False, sig.payload
    if takes:
        if not sig.fits_parent:
            raise TypeError(
                f"{sig.task_type}: this call cannot take its parent's result first "
                "(use .si(...) to ignore it)"
            )
        return True, sig.parent_payload
    if not sig.fits_alone:
        raise TypeError(f"{sig.task_type}: this call needs a parent's result but has no parent")
    return False, sig.payload


def compile_workflow(
    canvas: Canvas, build: BuildMessage, *, retention_s: float, workflow_id: str | None = None
) -> NewWorkflow:
    """Compile ``canvas`` into a workflow ready to store, with a fresh id (or ``workflow_id``).

    Raises:
        TypeError: an item is not a canvas, or a step's options are refused.
        PayloadError / PayloadTooLargeError: a step's payload (as ``enqueue`` raises them).
    """
    return _compile(canvas, build, retention_s, workflow_id)[0]


def compile_with_graph(
    canvas: Canvas, build: BuildMessage, *, retention_s: float, workflow_id: str | None = None
) -> tuple[NewWorkflow, Graph]:
    """:func:`compile_workflow`, and the graph as ``parse_graph`` reads it from the stored JSON,
    made from what was compiled (its messages are the ones compiled, not decoded again).

    Raises:
        The errors of :func:`compile_workflow`.
    """
    new, compiler, result = _compile(canvas, build, retention_s, workflow_id)
    return new, _graph(compiler, result)


def _compile(
    canvas: Canvas, build: BuildMessage, retention_s: float, workflow_id: str | None
) -> tuple[NewWorkflow, _Compiler, Source]:
    if not isinstance(canvas, Signature | Chain | Group | Chord):
        raise TypeError(f"cannot enqueue a {type(canvas).__name__} as a workflow")
    if workflow_id is None:
        workflow_id = str(new_task_id())
    compiler = _Compiler(workflow_id, build)
    result = compiler.item(canvas, None, "0")
    data = graph_json(compiler.steps, result)
    # The steps that start it: those waiting for nothing (error callbacks wait for a failure).
    first = tuple(
        compiler.messages[i]
        for i, step in enumerate(compiler.steps)
        if not step["deps"] and step["trigger"] is None
    )
    new = NewWorkflow(
        id=workflow_id,
        graph=data,
        steps=len(compiler.steps),
        first=first,
        retention_s=retention_s,
    )
    return new, compiler, result


def _graph(compiler: _Compiler, result: Source) -> Graph:
    """What ``parse_graph`` makes of the compiled steps once stored."""
    steps = compiler.steps
    dependents: list[list[int]] = [[] for _ in steps]
    for i, step in enumerate(steps):
        for d in step["deps"]:
            dependents[d].append(i)
    specs = tuple(
        StepSpec(
            index=i,
            message=message,
            deps=tuple(step["deps"]),
            input=step["input"],
            trigger=step["trigger"],
            errbacks=tuple(step["errbacks"]),
            dependents=tuple(dependents[i]),
            position=str(step["position"]),
            prepend=bool(step["prepend"]),
        )
        for i, (step, message) in enumerate(zip(steps, compiler.messages, strict=True))
    )
    callbacks = tuple(i for i, step in enumerate(steps) if step["trigger"] is not None)
    return Graph(steps=specs, result=result, error_callbacks=callbacks)


def rebind_workflow(graph: bytes, workflow_id: str, *, retention_s: float) -> NewWorkflow:
    """A compiled graph (from :func:`compile_workflow`) under another workflow id: each step's
    task id is rewritten, nothing else changes. A schedule stores one graph and fires it under
    a fresh id each time.

    Raises:
        PayloadError: ``graph`` is not a graph this version understands.
    """
    raw = decode_json(graph)
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list):
        raise PayloadError("a stored workflow graph must be an object with a list of steps")
    steps = raw["steps"]
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise PayloadError("a stored workflow step must be an object")
        step["id"] = step_task_id(workflow_id, index)
    data = graph_json(steps, raw.get("result"))
    parsed = parse_graph(data)
    return NewWorkflow(
        id=workflow_id,
        graph=data,
        steps=len(steps),
        first=tuple(parsed.steps[i].message for i in start(parsed)),
        retention_s=retention_s,
    )
