"""Pipeline progress on the memory broker (see :mod:`conveyor.brokers.progress`).

The document is a field of the task object itself, so every path that drops a task (complete
without retention, purge, delete, delete_queue) drops its progress with it, and a task re-created
under the same id starts with none. Each method runs under the broker's one lock.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from conveyor.errors import LeaseLostError
from conveyor.message import Lease, TaskState

if TYPE_CHECKING:
    from conveyor.brokers.memory.state import _State, _Task


class MemoryProgress:
    """The :class:`~conveyor.brokers.progress.ProgressStore` methods of ``MemoryBroker``."""

    if TYPE_CHECKING:

        def _locked(self) -> contextlib.AbstractContextManager[_State]: ...

        def _active(self, s: _State, lease: Lease) -> _Task | None: ...

    async def save_progress(self, lease: Lease, progress: bytes) -> None:
        """Replace the task's progress, if ``lease`` still holds it (else ``LeaseLostError``)."""
        with self._locked() as s:
            t = self._active(s, lease)
            if t is None:
                raise LeaseLostError(task_id=lease.task.id, queue=lease.task.queue)
            t.progress = bytes(progress)

    async def load_progress(self, queue: str, task_id: str) -> bytes | None:
        """The task's progress document, or ``None``."""
        with self._locked() as s:
            q = s.queues.get(queue)
            t = None if q is None else q.tasks.get(task_id)
            return None if t is None else t.progress

    async def resume_progress(
        self, queue: str, task_id: str, *, expected: bytes, progress: bytes
    ) -> bool:
        """Replace an ARCHIVED task's progress if it still equals ``expected``."""
        with self._locked() as s:
            q = s.queues.get(queue)
            t = None if q is None else q.tasks.get(task_id)
            if t is None or t.state is not TaskState.ARCHIVED or t.progress != expected:
                return False
            t.progress = bytes(progress)
            return True


if TYPE_CHECKING:
    from conveyor.brokers.memory.broker import MemoryBroker
    from conveyor.brokers.progress import ProgressStore

    def _conforms(b: MemoryBroker) -> ProgressStore:
        return b
