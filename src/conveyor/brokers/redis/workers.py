"""Worker records and cancel requests of the Redis broker (see :mod:`conveyor.brokers.workers`).

The registry is one hash and one sorted set in a slot of their own (``workers.lua``); a cancel
request is a field of the queue's ``cancels`` hash, set by ``cancel.lua`` in the queue's slot
after checking the task is ACTIVE, and read back with one ``HMGET`` per queue.
"""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.brokers.redis import keys
from conveyor.brokers.redis.base import RedisBrokerBase
from conveyor.brokers.redis.replies import as_bytes
from conveyor.brokers.workers import WorkerInfo, decode_worker, encode_worker
from conveyor.errors import BrokerError, TaskNotActiveError, TaskNotFoundError
from conveyor.message import Lease, validate_name

__all__ = ["WorkersMixin"]


class WorkersMixin(RedisBrokerBase):
    """The :class:`~conveyor.brokers.workers.WorkerRegistry` half of ``RedisBroker``."""

    async def register_worker(self, worker: WorkerInfo, *, ttl_s: float) -> None:
        """Store or refresh ``worker``'s record until ``now + ttl_s`` (server time)."""
        ttl_us = max(1, round(ttl_s * 1_000_000))
        args = ["register", worker.id, encode_worker(worker), ttl_us]
        await self._run("workers", keys.worker_keys(self._ns), args)

    async def unregister_worker(self, worker_id: str) -> None:
        """Delete a worker's record."""
        await self._run("workers", keys.worker_keys(self._ns), ["unregister", worker_id])

    async def list_workers(self) -> list[WorkerInfo]:
        """Live records by id; lapsed ones are deleted."""
        reply = await self._run("workers", keys.worker_keys(self._ns), ["list"])
        found: list[WorkerInfo] = []
        for i in range(0, len(reply), 2):
            beat, _, record = as_bytes(reply[i + 1]).partition(b" ")
            try:
                beat_s = int(beat) / 1_000_000
            except ValueError as exc:
                raise BrokerError(f"unreadable worker record {reply[i]!r}") from exc
            found.append(decode_worker(record, beat_s))
        return found

    async def request_cancel(self, queue: str, task_id: str) -> None:
        """Ask for the current attempt of an ACTIVE task to be cancelled (``cancel.lua``)."""
        q = self._keys(validate_name(queue, what="queue name"))
        keys_ = [q.task_prefix + task_id, keys.cancels(self._ns, queue), q.task_prefix]
        reply = await self._run("cancel", keys_, [task_id])
        outcome = as_bytes(reply[0])
        if outcome == b"missing":
            raise TaskNotFoundError(
                f"no task {task_id!r} in queue {queue!r}", task_id=task_id, queue=queue
            )
        if outcome == b"inactive":
            state = as_bytes(reply[1]).decode(errors="replace")
            raise TaskNotActiveError(task_id=task_id, queue=queue, state=state)

    async def cancel_requested(self, leases: Sequence[Lease]) -> list[bool]:
        """Whether each lease's attempt has a cancel request: one HMGET per queue."""
        by_queue: dict[str, list[int]] = {}
        for i, lease in enumerate(leases):
            by_queue.setdefault(lease.task.queue, []).append(i)
        found = [False] * len(leases)
        with self._errors():
            for queue, indexes in by_queue.items():
                ids = [leases[i].task.id for i in indexes]
                tokens = await self._client.hmget(keys.cancels(self._ns, queue), ids)
                for i, token in zip(indexes, tokens, strict=True):
                    found[i] = (
                        token is not None and as_bytes(token) == str(leases[i].token).encode()
                    )
        return found
