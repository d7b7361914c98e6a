"""Task lifecycle signals: subscribe a function to what happens to tasks.

A :class:`Signals` object belongs to one worker :class:`~conveyor.Server` (``server.signals``:
started, succeeded, failed, retried, archived) or one client (``client.signals``: enqueued).
Receivers run synchronously, where the event happens (the worker's event loop, or the thread
that enqueued), so they must be quick: count, log, or hand off. A receiver that raises is logged
and skipped; it never changes the task's outcome.

Example::

    server = app.server()
    server.signals.task_failed.connect(lambda event: print(event.task_id, event.error))

Order for one attempt: ``task_started``, then ``task_succeeded`` or ``task_failed``; a failed
attempt is followed by ``task_retried`` or ``task_archived`` once the broker has recorded it. An
attempt interrupted by shutdown or a lost lease ends with no outcome signal (it is not finished).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Signal", "Signals", "TaskEvent", "TaskEventKind"]

logger = logging.getLogger(__name__)


class TaskEventKind(enum.StrEnum):
    """What happened to a task."""

    ENQUEUED = "enqueued"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    ARCHIVED = "archived"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEvent:
    """One lifecycle event of a task.

    Attributes:
        kind: what happened.
        task_id: the task's id.
        task_type: the task's type.
        queue: the task's queue.
        attempt: which attempt (1 for the first run); 0 for ``enqueued``.
        duration_s: how long the handler ran (``succeeded`` and ``failed``), else ``None``.
        error: the failure's text (``failed``, ``retried``, ``archived``), else ``None``.
    """

    kind: TaskEventKind
    task_id: str
    task_type: str
    queue: str
    attempt: int = 0
    duration_s: float | None = None
    error: str | None = None


Receiver = Callable[[TaskEvent], object]
"""A function called with each event of a signal (its return value is ignored)."""


class Signal:
    """A list of receivers to call when an event happens.

    Args:
        kind: the kind of event this signal sends.
    """

    def __init__(self, kind: TaskEventKind) -> None:
        self.kind = kind
        self._lock = threading.Lock()
        self._receivers: tuple[Receiver, ...] = ()

    def connect(self, receiver: Receiver) -> Receiver:
        """Call ``receiver(event)`` for every event from now on; returns it (a decorator too)."""
        with self._lock:
            self._receivers = (*self._receivers, receiver)
        return receiver

    def disconnect(self, receiver: Receiver) -> None:
        """Stop calling ``receiver`` (nothing happens if it was not connected)."""
        with self._lock:
            self._receivers = tuple(r for r in self._receivers if r is not receiver)

    @property
    def receivers(self) -> tuple[Receiver, ...]:
        """The connected receivers, in the order they are called."""
        return self._receivers

    def send(self, event: TaskEvent) -> None:
        """Call every receiver with ``event``; one that raises is logged and the rest still run."""
        for receiver in self._receivers:  # a tuple: connecting while sending is safe
            try:
                receiver(event)
            except Exception:
                logger.exception("a %s signal receiver raised", self.kind.value)


class Signals:
    """The lifecycle signals of one worker or client.

    Attributes:
        task_enqueued: a task was stored by this client.
        task_started: a worker began running an attempt's handler.
        task_succeeded: the broker recorded an attempt's success.
        task_failed: an attempt failed (raised, timed out, was cancelled or was unreadable).
        task_retried: a failed attempt was recorded as RETRY.
        task_archived: a failed attempt was recorded as ARCHIVED (dead).
    """

    def __init__(self) -> None:
        self.task_enqueued = Signal(TaskEventKind.ENQUEUED)
        self.task_started = Signal(TaskEventKind.STARTED)
        self.task_succeeded = Signal(TaskEventKind.SUCCEEDED)
        self.task_failed = Signal(TaskEventKind.FAILED)
        self.task_retried = Signal(TaskEventKind.RETRIED)
        self.task_archived = Signal(TaskEventKind.ARCHIVED)

    def of(self, kind: TaskEventKind) -> Signal:
        """The signal that sends events of ``kind``."""
        return {
            TaskEventKind.ENQUEUED: self.task_enqueued,
            TaskEventKind.STARTED: self.task_started,
            TaskEventKind.SUCCEEDED: self.task_succeeded,
            TaskEventKind.FAILED: self.task_failed,
            TaskEventKind.RETRIED: self.task_retried,
            TaskEventKind.ARCHIVED: self.task_archived,
        }[kind]

    def connect_all(self, receiver: Receiver) -> Receiver:
        """Connect ``receiver`` to every signal (it can tell them apart by ``event.kind``)."""
        for kind in TaskEventKind:
            self.of(kind).connect(receiver)
        return receiver
