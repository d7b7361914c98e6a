"""The progress protocol: where a pipeline task keeps how far it got, beside its task record.

A pipeline (:mod:`conveyor.workflows.pipeline`) stores a small document after each step (see
:mod:`conveyor.progress` for its shape). Brokers keep it as opaque bytes; what they promise:

* ``save_progress`` is one atomic, fenced step: it writes only while the task is ACTIVE under
  the lease presented (the same compare-and-set on ``(queue, id, token)`` as ``complete``), so a
  worker whose lease was lost or taken over can never overwrite a newer run's progress.
* The document lives and dies with its task: deleting the task (``complete`` without retention,
  ``purge_expired`` after retention, ``delete_task(s)``, ``delete_queue``) deletes it in the same
  step, and a task later enqueued under the same id starts with none.
* ``resume_progress`` replaces the document of an ARCHIVED task only, and only if it still equals
  ``expected`` (compare-and-set): the inspector's resume of an interrupted step.

Memory keeps it on the task object, SQLite in the ``task_progress`` table (dropped by a trigger
when the task row goes), Redis in a ``progress`` field of the task hash (in the task's slot).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from conveyor.message import Lease

__all__ = ["ProgressStore"]


@runtime_checkable
class ProgressStore(Protocol):
    """Fenced per-task progress documents; every backend implements it beside ``Broker``."""

    async def save_progress(self, lease: Lease, progress: bytes) -> None:
        """Replace the task's progress document, in one atomic step fenced by ``lease``.

        Raises:
            LeaseLostError: the task is not ACTIVE under this lease; nothing changed.
        """
        ...

    async def load_progress(self, queue: str, task_id: str) -> bytes | None:
        """The task's progress document, or ``None`` (no such task, or none stored)."""
        ...

    async def resume_progress(
        self, queue: str, task_id: str, *, expected: bytes, progress: bytes
    ) -> bool:
        """Replace the document of an ARCHIVED task if it still equals ``expected``.

        Returns whether it was replaced (``False``: the task is gone, not ARCHIVED, or its
        document changed).
        """
        ...
