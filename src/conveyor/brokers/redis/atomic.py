"""All-or-nothing completion on the Redis broker (see :mod:`conveyor.brokers.atomic`).

One run of ``complete_all.lua``, which checks every lease and every successor before it writes
anything. Redis Cluster runs a script within one hash slot, which holds one queue's keys: a call
spanning several queues is refused before anything is sent (:class:`CrossSlotError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.brokers.atomic import CrossSlotError, check_distinct
from conveyor.brokers.redis.replies import check_names
from conveyor.message import Completion, TaskInfo, TaskMessage


class RedisAtomicCompletion:
    """The :class:`~conveyor.brokers.atomic.AtomicCompletion` method of ``RedisBroker``."""

    if TYPE_CHECKING:
        _cluster: bool

        async def enqueue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]: ...

        async def _complete_batch(
            self,
            completions: Sequence[Completion],
            *,
            with_successors: bool,
            script: str = "complete",
        ) -> list[bool]: ...

    async def enqueue_all(self, messages: Sequence[TaskMessage]) -> None:
        """Store ``messages`` all or nothing; refused on Cluster when they span queues."""
        self._one_slot({m.queue for m in messages})
        await self.enqueue(messages)

    async def complete_all(self, completions: Sequence[Completion]) -> bool:
        """Apply every completion and its successors in one script run, or nothing."""
        if not completions:
            return True
        check_distinct(completions)
        check_names([m for c in completions for m in c.successors])
        queues = {c.lease.task.queue for c in completions}
        self._one_slot(queues.union(m.queue for c in completions for m in c.successors))
        done = await self._complete_batch(completions, with_successors=True, script="complete_all")
        return len(done) == len(completions) and all(done)

    def _one_slot(self, queues: set[str]) -> None:
        if self._cluster and len(queues) > 1:
            raise CrossSlotError(
                "Redis Cluster applies an atomic step within one queue (one hash slot); "
                f"this one spans {len(queues)}: {', '.join(sorted(queues))}"
            )


if TYPE_CHECKING:
    from conveyor.brokers.atomic import AtomicCompletion
    from conveyor.brokers.redis.broker import RedisBroker

    def _conforms(b: RedisBroker) -> AtomicCompletion:
        return b
