"""Attempt history on the memory broker (see :mod:`conveyor.brokers.history`).

The records are a field of the task object, filled by ``MemoryBroker._fail`` (every failed
attempt goes through it, under the broker's one lock, in the step that moves the task): so every
path that drops a task drops its history with it, and a task that never fails has none (the
field stays ``None``).
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING

from conveyor.brokers.history import HISTORY_KEPT, history_error
from conveyor.message import AttemptRecord, to_datetime

if TYPE_CHECKING:
    from conveyor.brokers.memory.state import _State, _Task

AttemptEntries = deque[tuple[int, float, str]]
"""A task's failed attempts: ``(attempt, failed_at, error)``, the last ``HISTORY_KEPT``."""


def record_attempt(t: _Task, error: str, now: float) -> None:
    """Add the attempt that just failed (``t.retried`` already counts it) to ``t.history``."""
    if t.history is None:
        t.history = deque(maxlen=HISTORY_KEPT)
    t.history.append((t.retried, now, history_error(error)))


class MemoryHistory:
    """The :class:`~conveyor.brokers.history.AttemptHistory` method of ``MemoryBroker``."""

    if TYPE_CHECKING:

        def _locked(self) -> contextlib.AbstractContextManager[_State]: ...

    async def load_history(self, queue: str, task_id: str) -> tuple[AttemptRecord, ...]:
        """The task's failed attempts, oldest first."""
        with self._locked() as s:
            q = s.queues.get(queue)
            t = None if q is None else q.tasks.get(task_id)
            entries = () if t is None or t.history is None else tuple(t.history)
        return tuple(
            AttemptRecord(attempt=n, failed_at=when, error=error)
            for n, at, error in entries
            if (when := to_datetime(at)) is not None
        )


if TYPE_CHECKING:
    from conveyor.brokers.history import AttemptHistory
    from conveyor.brokers.memory.broker import MemoryBroker

    def _conforms(b: MemoryBroker) -> AttemptHistory:
        return b
