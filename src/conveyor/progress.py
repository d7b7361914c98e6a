"""Pipeline progress: the record stored after each step, and the result log read from it.

A pipeline task stores one JSON document beside its task record (see
:class:`~conveyor.brokers.progress.ProgressStore`); brokers keep it as opaque bytes, fenced by
the lease, and delete it with the task. It says how far the pipeline got::

    {"v": 1,
     "next": 2,                    # index of the first step not finished
     "data": {...},                # the dict the last finished step returned (absent at 0)
     "started": null,              # a non-reentrant step started and not finished, or null
     "log": [{"step": "charge", "state": "succeeded", "attempts": 1, "error": null}, ...]}

``log`` has one entry per step reached, in step order: what :attr:`TaskInfo.result_log
<conveyor.message.TaskInfo.result_log>` shows. Decoding checks the shape and never evaluates
anything: a document that does not fit raises :class:`~conveyor.errors.PayloadError`.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from conveyor.errors import PayloadError

if TYPE_CHECKING:
    from conveyor.brokers.progress import ProgressStore

__all__ = ["PipelineStepState", "Progress", "StepLog", "resume_interrupted"]

FORMAT_VERSION = 1


class PipelineStepState(enum.StrEnum):
    """What happened to a pipeline step, as the result log shows it."""

    RUNNING = "running"
    """A non-reentrant step was started and has not finished (yet, or its worker died)."""
    SUCCEEDED = "succeeded"
    """The step returned; its dict is stored and it never runs again."""
    FAILED = "failed"
    """The step's last attempt raised."""
    INTERRUPTED = "interrupted"
    """A non-reentrant step was started and never finished: the task was archived for a person."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepLog:
    """One entry of a pipeline task's result log: a step reached and how it went.

    Attributes:
        step: the step's name.
        state: see :class:`PipelineStepState`.
        attempts: how many times the step was started, over every run of the task.
        error: the last error the step raised (type name and message), or ``None``.
    """

    step: str
    state: PipelineStepState
    attempts: int = 0
    error: str | None = None


@dataclass(slots=True, kw_only=True)
class Progress:
    """The mutable progress record of one pipeline task (see the module docstring)."""

    next: int = 0
    data: dict[str, Any] | None = None
    started: int | None = None
    log: list[StepLog] = field(default_factory=list)

    def encode(self) -> bytes:
        """The JSON document stored in the broker."""
        doc: dict[str, Any] = {"v": FORMAT_VERSION, "next": self.next, "started": self.started}
        if self.data is not None:
            doc["data"] = self.data
        doc["log"] = [
            {"step": e.step, "state": e.state.value, "attempts": e.attempts, "error": e.error}
            for e in self.log
        ]
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Progress:
        """Read a stored document.

        Raises:
            PayloadError: the bytes are not a progress document of a known version.
        """
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise PayloadError(f"stored pipeline progress is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION:
            raise PayloadError("stored pipeline progress has an unknown format")
        nxt, data, started, log = (doc.get(k) for k in ("next", "data", "started", "log"))
        if (
            not _is_index(nxt)
            or not (data is None or isinstance(data, dict))
            or not (started is None or _is_index(started))
            or not isinstance(log, list)
        ):
            raise PayloadError("stored pipeline progress has fields of the wrong type")
        return cls(next=nxt, data=data, started=started, log=[_entry(e) for e in log])

    def entry(self, index: int, name: str) -> StepLog:
        """The log entry of step ``index`` (a fresh one when the step was never reached)."""
        if index < len(self.log):
            return self.log[index]
        return StepLog(step=name, state=PipelineStepState.RUNNING)

    def set_entry(self, index: int, entry: StepLog) -> None:
        """Store the log entry of step ``index`` (steps are reached in order)."""
        if index < len(self.log):
            self.log[index] = entry
        else:
            self.log.append(entry)


def _is_index(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(raw: object) -> StepLog:
    if not isinstance(raw, dict):
        raise PayloadError("stored pipeline progress has a malformed log entry")
    step, state, attempts, error = (raw.get(k) for k in ("step", "state", "attempts", "error"))
    if (
        not isinstance(step, str)
        or not isinstance(state, str)
        or state not in PipelineStepState.__members__.values()
        or not _is_index(attempts)
        or not (error is None or isinstance(error, str))
    ):
        raise PayloadError("stored pipeline progress has a malformed log entry")
    return StepLog(step=step, state=PipelineStepState(state), attempts=attempts, error=error)


def result_log(raw: bytes | None) -> tuple[StepLog, ...]:
    """The result log of a stored document (empty for none).

    Raises:
        PayloadError: the document cannot be read.
    """
    return () if raw is None else tuple(Progress.decode(raw).log)


async def resume_interrupted(store: ProgressStore, queue: str, task_id: str) -> bool:
    """Let an ARCHIVED pipeline task run its interrupted non-reentrant step again.

    A person's decision (``Inspector.run_task``): the "step started" mark is cleared, so the next
    run starts that step afresh instead of archiving the task as interrupted again. Only an
    ARCHIVED task is changed, compare-and-set on the stored document, so a worker never races it.
    Returns whether a mark was cleared (``False``: not a pipeline, not archived, or no mark).
    """
    raw = await store.load_progress(queue, task_id)
    if raw is None:
        return False
    try:
        progress = Progress.decode(raw)
    except PayloadError:
        return False  # the run archives it again with the reason; nothing to clear here
    if progress.started is None:
        return False
    progress.started = None
    return await store.resume_progress(queue, task_id, expected=raw, progress=progress.encode())
