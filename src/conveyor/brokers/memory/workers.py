"""Worker records and cancel requests of the memory broker (see :mod:`conveyor.brokers.workers`).

Kept under the broker's one lock, like every other transition, in two fields of its state:
``workers`` (id -> record and expiry) and ``cancels`` ((queue, id) -> the token to cancel).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from conveyor.brokers.workers import WorkerInfo
from conveyor.errors import TaskNotActiveError, TaskNotFoundError
from conveyor.message import Lease, TaskState

if TYPE_CHECKING:
    from conveyor.brokers.memory.state import _State

__all__ = ["MemoryWorkersMixin"]


class MemoryWorkersMixin:
    """The :class:`~conveyor.brokers.workers.WorkerRegistry` half of ``MemoryBroker``."""

    clock: Callable[[], float]

    if TYPE_CHECKING:

        def _locked(self) -> AbstractContextManager[_State]: ...

    async def register_worker(self, worker: WorkerInfo, *, ttl_s: float) -> None:
        """Store or refresh ``worker``'s record until ``now + ttl_s``."""
        with self._locked() as s:
            now = self.clock()
            beat = datetime.fromtimestamp(now, UTC)
            s.workers[worker.id] = (dataclasses.replace(worker, last_heartbeat=beat), now + ttl_s)

    async def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker's record."""
        with self._locked() as s:
            s.workers.pop(worker_id, None)

    async def list_workers(self) -> list[WorkerInfo]:
        """Live records by id; lapsed ones are dropped."""
        with self._locked() as s:
            now = self.clock()
            for worker_id in [w for w, (_, expires) in s.workers.items() if expires <= now]:
                del s.workers[worker_id]
            return [info for _, (info, _) in sorted(s.workers.items())]

    async def request_cancel(self, queue: str, task_id: str) -> None:
        """Ask for the current attempt of an ACTIVE task to be cancelled."""
        with self._locked() as s:
            q = s.queues.get(queue)
            t = None if q is None else q.tasks.get(task_id)
            if t is None:
                raise TaskNotFoundError(
                    f"no task {task_id!r} in queue {queue!r}", task_id=task_id, queue=queue
                )
            if t.state is not TaskState.ACTIVE:
                raise TaskNotActiveError(task_id=task_id, queue=queue, state=t.state.value)
            assert q is not None
            # Drop the requests of this queue's attempts that have ended: they can never match.
            for key, token in list(s.cancels.items()):
                other = q.tasks.get(key[1]) if key[0] == queue else None
                if key[0] == queue and (
                    other is None or other.state is not TaskState.ACTIVE or other.token != token
                ):
                    del s.cancels[key]
            s.cancels[(queue, task_id)] = t.token

    async def cancel_requested(self, leases: Sequence[Lease]) -> list[bool]:
        """Whether each lease's attempt has a cancel request."""
        with self._locked() as s:
            return [
                s.cancels.get((lease.task.queue, lease.task.id)) == lease.token for lease in leases
            ]
