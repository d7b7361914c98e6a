"""How a workflow advances: the stored graph and the pure transition functions every backend runs.

The graph (JSON, made by :mod:`conveyor.workflows.compile`) lists steps. Each step names the
steps it waits for (``deps``), where its input comes from (``input``: a *source*, see below),
and its error callbacks (``errbacks``). An error callback is a step of its own with a
``trigger``: it runs when that step fails, never otherwise.

A source is ``null`` (no input), a step index (that step's result) or a list of sources (the
list of their values, in order): a chord body's input is the list of its header's results, a
group of chains gives the list of each chain's last result, and so on to any depth.

The transition functions take a :class:`~conveyor.brokers.workflows.WorkflowRecord` and return a
:class:`Change` (or ``None`` when nothing changes: a repeated event is a no-op). They read no
clock and do no I/O, so the memory and SQLite backends call them under their lock or inside their
transaction, and the Redis backend computes a change and writes it by compare-and-set.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import overload

from conveyor.brokers.workflows import (
    FINISHED,
    StepOutcome,
    StepRecord,
    StepState,
    WorkflowRecord,
    WorkflowState,
)
from conveyor.errors import PayloadError
from conveyor.message import Encoding, JSONValue, TaskMessage, _new_task_message, decode_json

__all__ = [
    "Change",
    "Graph",
    "StepSpec",
    "cancel",
    "continuation",
    "evaluate",
    "parse_graph",
    "settle",
    "start",
]

Source = int | list["Source"] | None
"""Where a value comes from: a step's result, a list of values, or nothing."""


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step of a graph."""

    index: int
    message: TaskMessage
    deps: tuple[int, ...]
    input: Source
    trigger: int | None
    errbacks: tuple[int, ...]
    dependents: tuple[int, ...]
    position: str
    prepend: bool  # a task function: the input (or error) comes first in its arguments


@dataclass(frozen=True, slots=True)
class Graph:
    """A parsed workflow graph."""

    steps: Sequence[StepSpec]
    result: Source
    error_callbacks: tuple[int, ...] = ()  # the steps that are error callbacks, in order

    def main(self) -> list[StepSpec]:
        """The steps that make up the workflow (every step but the error callbacks)."""
        return [s for s in self.steps if s.trigger is None]


@dataclass(frozen=True, slots=True)
class Change:
    """A workflow transition: the record after it, and the steps whose tasks to enqueue now."""

    record: WorkflowRecord
    enqueue: tuple[int, ...]
    finished: bool  # the workflow reached a final state in this change (set finished_at)
    reopened: bool  # a failed workflow runs again (clear finished_at)

    def messages(self, graph: Graph) -> list[TaskMessage]:
        """The messages of the steps to enqueue."""
        return [graph.steps[i].message for i in self.enqueue]


def _source(value: object) -> Source:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, list):
        return [_source(v) for v in value]
    raise PayloadError(f"bad source in workflow graph: {value!r:.60}")


def _message(raw: dict[str, JSONValue]) -> TaskMessage:
    encoding = Encoding(raw["enc"])
    text = raw["payload"]
    payload = base64.b64decode(text) if encoding is Encoding.BYTES else str(text).encode()
    get = raw.get
    # Every field, in order, without the keyword __init__: one step is made per chain step.
    return _new_task_message(
        raw["id"], raw["type"], raw["queue"], payload, encoding, int(raw["max_retry"]),
        get("timeout_s"), get("deadline"), float(get("retention_s") or 0.0), None, None,
        get("process_at"), get("process_in_s"), None,
    )  # fmt: skip


_MADE: dict[str, JSONValue] = {}  # in place of a step's JSON once the step is made


class _Steps(Sequence[StepSpec]):
    """A parsed graph's steps, each made from its JSON on first use: a worker running a few
    hundred of a chord's thousand members makes those, not the thousand (a bad step raises
    :class:`PayloadError` when it is first used)."""

    __slots__ = ("_dependents", "_made", "_raw")

    def __init__(self, raw: list[dict[str, JSONValue]], dependents: list[list[int]]) -> None:
        self._raw = raw
        self._dependents = dependents
        self._made: list[StepSpec | None] = [None] * len(raw)

    def __len__(self) -> int:
        return len(self._raw)

    @overload
    def __getitem__(self, index: int) -> StepSpec: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[StepSpec]: ...
    def __getitem__(self, index: int | slice) -> StepSpec | Sequence[StepSpec]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self._raw))[index]]
        found = self._made[index]
        if found is None:
            i = index % len(self._raw)
            raw = self._raw[i]
            if raw is _MADE:  # made meanwhile by another thread (set before its JSON goes)
                made = self._made[i]
                assert made is not None
                return made
            found = self._made[i] = self._make(i, raw)
            self._raw[i] = _MADE  # its JSON is no longer needed
        return found

    def __iter__(self) -> Iterator[StepSpec]:
        return map(self.__getitem__, range(len(self._raw)))

    def _make(self, i: int, s: dict[str, JSONValue]) -> StepSpec:
        try:
            return StepSpec(
                index=i,
                message=_message(s),
                deps=tuple(s["deps"]),
                input=_source(s["input"]),
                trigger=s["trigger"],
                errbacks=tuple(s["errbacks"]),
                dependents=tuple(self._dependents[i]),
                position=s["position"],
                prepend=bool(s["prepend"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise PayloadError(f"stored workflow graph is malformed: {exc}") from exc


@functools.lru_cache(maxsize=256)
def parse_graph(data: bytes) -> Graph:
    """Parse a stored graph (cached: a graph never changes once stored). Its steps are made
    on first use (see :class:`_Steps`).

    Raises:
        PayloadError: the data is not a graph this version understands.
    """
    raw = decode_json(data)
    try:
        steps_raw = raw["steps"]
        dependents: list[list[int]] = [[] for _ in steps_raw]
        callbacks: list[int] = []
        for i, s in enumerate(steps_raw):
            for d in s["deps"]:
                dependents[d].append(i)
            if s["trigger"] is not None:
                callbacks.append(i)
        return Graph(
            steps=_Steps(steps_raw, dependents),
            result=_source(raw["result"]),
            error_callbacks=tuple(callbacks),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PayloadError(f"stored workflow graph is malformed: {exc}") from exc


def graph_json(steps: Sequence[dict[str, JSONValue]], result: Source) -> bytes:
    """Encode a graph (the inverse of :func:`parse_graph`)."""
    return json.dumps({"version": 1, "steps": list(steps), "result": result}).encode()


def evaluate(source: Source, steps: Sequence[StepRecord]) -> JSONValue:
    """The value a source stands for, from the steps' recorded results."""
    if source is None:
        return None
    if isinstance(source, int):
        return steps[source].decoded_result()
    return [evaluate(s, steps) for s in source]


def start(graph: Graph) -> tuple[int, ...]:
    """The steps enqueued when the workflow is stored: those waiting for nothing."""
    return tuple(s.index for s in graph.main() if not s.deps)


def _ready(graph: Graph, steps: list[StepRecord], candidates: Sequence[int]) -> list[int]:
    ready = []
    for j in candidates:
        spec = graph.steps[j]
        if (
            spec.trigger is None
            and steps[j].state is StepState.WAITING
            and all(steps[d].state is StepState.SUCCEEDED for d in spec.deps)
        ):
            ready.append(j)
    return ready


def settle(graph: Graph, rec: WorkflowRecord, index: int, outcome: StepOutcome) -> Change | None:
    """The change made by step ``index`` ending with ``outcome``; ``None`` if already recorded."""
    if outcome.succeeded:
        return _succeeded(graph, rec, index, outcome.result)
    return _failed(graph, rec, index, outcome.error)


def _succeeded(graph: Graph, rec: WorkflowRecord, index: int, result: bytes) -> Change | None:
    steps = list(rec.steps)
    if steps[index].state is StepState.SUCCEEDED:
        return None  # a redelivered step whose completion was recorded: nothing to do
    was_failed = steps[index].state is StepState.FAILED
    steps[index] = StepRecord(state=StepState.SUCCEEDED, result=result)
    state, error, failed_task = rec.state, rec.error, rec.failed_task
    reopened = False
    spec = graph.steps[index]
    candidates: Sequence[int] = spec.dependents
    if spec.trigger is None:
        if state is WorkflowState.FAILED and was_failed:
            # A failed step re-run by the inspector succeeded: the workflow goes on from here,
            # unless another step of it is still failed.
            if not any(steps[s.index].state is StepState.FAILED for s in graph.main()):
                state, error, failed_task, reopened = WorkflowState.RUNNING, None, None, True
                candidates = range(len(steps))  # anything held back by the failure may start
        elif state is WorkflowState.PENDING:
            state = WorkflowState.RUNNING
    enqueue: list[int] = []
    finished = False
    if spec.trigger is None and state is WorkflowState.RUNNING:
        enqueue = _ready(graph, steps, candidates)
        for j in enqueue:
            steps[j] = StepRecord(state=StepState.ENQUEUED)
        if all(steps[s.index].state is StepState.SUCCEEDED for s in graph.main()):
            state, finished = WorkflowState.SUCCEEDED, True
    new = replace(
        rec,
        steps=tuple(steps),
        state=state,
        error=error,
        failed_task=failed_task,
        version=rec.version + 1,
    )
    return Change(new, tuple(enqueue), finished, reopened)


def _failed(graph: Graph, rec: WorkflowRecord, index: int, error: str) -> Change | None:
    steps = list(rec.steps)
    if steps[index].state in (StepState.FAILED, StepState.SUCCEEDED):
        return None
    steps[index] = StepRecord(state=StepState.FAILED, error=error)
    spec = graph.steps[index]
    state, wf_error, failed_task, finished = rec.state, rec.error, rec.failed_task, False
    if spec.trigger is None and state in (WorkflowState.PENDING, WorkflowState.RUNNING):
        state, wf_error, failed_task, finished = WorkflowState.FAILED, error, spec.message.id, True
    enqueue: list[int] = []
    if state is not WorkflowState.CANCELLED:
        enqueue = [j for j in spec.errbacks if steps[j].state is StepState.WAITING]
        for j in enqueue:
            steps[j] = StepRecord(state=StepState.ENQUEUED)
    new = replace(
        rec,
        steps=tuple(steps),
        state=state,
        error=wf_error,
        failed_task=failed_task,
        version=rec.version + 1,
    )
    return Change(new, tuple(enqueue), finished, False)


def continuable(spec: StepSpec, index: int, queues: frozenset[str]) -> bool:
    """Whether step ``spec``, made ready by step ``index``'s success, may be leased to the
    worker settling it (an eager continuation): a step of the workflow (not an error callback)
    on one of ``queues``, due now (no delay), whose input is ``index``'s result or nothing."""
    m = spec.message
    return (
        spec.trigger is None
        and m.queue in queues
        and (spec.input is None or spec.input == index)
        and m.process_at is None
        and not m.process_in_s
        and m.unique_key is None
    )


def continuation(
    graph: Graph, ready: Iterable[int], index: int, queues: frozenset[str]
) -> StepSpec | None:
    """The first of the ``ready`` steps (made ready by step ``index``'s success) that may
    continue eagerly (:func:`continuable`)."""
    if not queues:
        return None
    for j in ready:
        if continuable(graph.steps[j], index, queues):
            return graph.steps[j]
    return None


def continued_input(spec: StepSpec, result: bytes) -> bytes | None:
    """A continued step's input: its parent's encoded result, or ``None`` (it takes none)."""
    return None if spec.input is None else result


def cancel(rec: WorkflowRecord) -> Change | None:
    """Cancel a workflow not yet finished: steps not yet started never start."""
    if rec.state in FINISHED:
        return None
    steps = tuple(
        StepRecord(state=StepState.CANCELLED)
        if s.state in (StepState.WAITING, StepState.ENQUEUED)
        else s
        for s in rec.steps
    )
    new = replace(rec, steps=steps, state=WorkflowState.CANCELLED, version=rec.version + 1)
    return Change(new, (), True, False)


def index_ranges(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted step indices as inclusive ``(first, last)`` runs (0..999 is one): how the fast
    settlements name a dependent's inputs, so a chord body's thousand read as one range."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [(a, b) for a, b in runs]


def sources(source: Source) -> list[int]:
    """The steps a source reads, in order."""
    if source is None:
        return []
    if isinstance(source, int):
        return [source]
    return [i for s in source for i in sources(s)]


def needed_by(graph: Graph, index: int) -> list[int]:
    """The steps whose records step ``index`` reads before it runs (itself included)."""
    spec = graph.steps[index]
    trigger = [] if spec.trigger is None else [spec.trigger]
    return [index, *trigger, *sources(spec.input)]


def should_run(rec: WorkflowRecord, index: int) -> bool:
    """Whether a claimed step's handler should run (not when its workflow cancelled it)."""
    return rec.steps[index].state is not StepState.CANCELLED
