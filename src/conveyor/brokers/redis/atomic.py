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
from conveyor.message import Completion


class RedisAtomicCompletion:
    """The :class:`~conveyor.brokers.atomic.AtomicCompletion` method of ``RedisBroker``."""

    if TYPE_CHECKING:
        _cluster: bool

        async def _complete_batch(
            self,
            completions: Sequence[Completion],
            *,
            with_successors: bool,
            script: str = "complete",
        ) -> list[bool]: ...

    async def complete_all(self, completions: Sequence[Completion]) -> bool:
        """Apply every completion and its successors in one script run, or nothing."""
        if not completions:
            return True
        check_distinct(completions)
        check_names([m for c in completions for m in c.successors])
        if self._cluster:
            queues = {c.lease.task.queue for c in completions}
            queues.update(m.queue for c in completions for m in c.successors)
            if len(queues) > 1:
                raise CrossSlotError(
                    "Redis Cluster applies an atomic step within one queue (one hash slot); "
                    f"this one spans {len(queues)}: {', '.join(sorted(queues))}"
                )
        done = await self._complete_batch(completions, with_successors=True, script="complete_all")
        return len(done) == len(completions) and all(done)


if TYPE_CHECKING:
    from conveyor.brokers.atomic import AtomicCompletion
    from conveyor.brokers.redis.broker import RedisBroker

    def _conforms(b: RedisBroker) -> AtomicCompletion:
        return b
