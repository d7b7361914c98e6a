"""Pipeline progress on the Redis broker (see :mod:`conveyor.brokers.progress`).

The document is the ``progress`` field of the task hash (``keys.task``): in the queue's slot, so
the fenced write is one script on a Cluster too, and every script that deletes the record (DEL
of the hash) deletes the document with it. Writes are ``save_progress.lua`` (checks the lease)
and ``resume_progress.lua`` (compare-and-set on an ARCHIVED task); a read is one ``HGET``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.brokers.redis.base import RedisBrokerBase
from conveyor.brokers.redis.replies import as_bytes
from conveyor.errors import LeaseLostError
from conveyor.message import Lease


class ProgressMixin(RedisBrokerBase):
    """The :class:`~conveyor.brokers.progress.ProgressStore` methods of ``RedisBroker``."""

    async def save_progress(self, lease: Lease, progress: bytes) -> None:
        """Replace the task's progress, if ``lease`` still holds it (else ``LeaseLostError``)."""
        task = lease.task
        tkey = self._keys(task.queue).task_prefix + task.id
        if await self._run("save_progress", [tkey], [str(lease.token), bytes(progress)]) != 1:
            raise LeaseLostError(task_id=task.id, queue=task.queue)

    async def load_progress(self, queue: str, task_id: str) -> bytes | None:
        """The task's progress document, or ``None``."""
        tkey = self._keys(queue).task_prefix + task_id
        with self._errors():
            raw = await self._client.hget(tkey, "progress")
        return None if raw is None else as_bytes(raw)

    async def resume_progress(
        self, queue: str, task_id: str, *, expected: bytes, progress: bytes
    ) -> bool:
        """Replace an ARCHIVED task's progress if it still equals ``expected``."""
        tkey = self._keys(queue).task_prefix + task_id
        reply = await self._run("resume_progress", [tkey], [bytes(expected), bytes(progress)])
        return bool(reply == 1)


if TYPE_CHECKING:
    from conveyor.brokers.progress import ProgressStore
    from conveyor.brokers.redis.broker import RedisBroker

    def _conforms(b: RedisBroker) -> ProgressStore:
        return b
