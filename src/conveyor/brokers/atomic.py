"""The atomic-completion protocol: several completions applied as one step, or not at all.

:meth:`Broker.complete` is atomic per completion: a batch whose second lease was lost still
applies the first. ``conveyor server``'s masenko ``ATOMIC … DONE`` block needs more: every ACK
in the block and every PUSH riding on it take effect together, or nothing changes. What
backends promise for :meth:`AtomicCompletion.complete_all`:

* One atomic step (under the memory broker's lock, in one SQLite transaction, in one Redis
  script): every lease is checked and every successor validated before anything is written.
* A lost lease refuses the whole call (``False``); a refused successor raises, as ``complete``
  does; either way nothing changed.
* Successors are validated against the store as it was before the call, so a successor may not
  reuse the id or unique key of a task completed in the same call (``complete`` applied one by
  one might allow it).
* Redis Cluster: one script runs in one hash slot, which holds one queue's keys. A call whose
  leases and successors span more than one queue is refused up front with
  :class:`CrossSlotError` (nothing is sent to Redis).

:meth:`AtomicCompletion.enqueue_all` is the same promise for a block without completions:
``enqueue`` is already all or nothing, except on Redis Cluster across queues, which it refuses
up front with :class:`CrossSlotError` instead of storing queue by queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from conveyor.errors import BrokerError
from conveyor.message import Completion, TaskMessage

__all__ = ["AtomicCompletion", "CrossSlotError", "check_distinct"]


class CrossSlotError(BrokerError, ValueError):
    """An atomic step would span several Redis Cluster hash slots (several queues)."""


@runtime_checkable
class AtomicCompletion(Protocol):
    """All-or-nothing completion; every backend implements it beside ``Broker``."""

    async def complete_all(self, completions: Sequence[Completion]) -> bool:
        """Record every completion with its successors in one atomic step, or none of them.

        Returns:
            ``True`` when all were applied; ``False`` when a lease was lost (nothing changed).

        Raises:
            TaskIdConflictError: a successor's id is taken; nothing changed.
            DuplicateTaskError: a successor's unique key is held; nothing changed.
            CrossSlotError: Redis Cluster, the call spans several queues; nothing changed.
            ValueError: two completions name the same task.
        """
        ...

    async def enqueue_all(self, messages: Sequence[TaskMessage]) -> None:
        """Store ``messages`` in one atomic step, as ``enqueue`` does, or none of them.

        Raises:
            TaskIdConflictError: an id is taken; nothing changed.
            DuplicateTaskError: a unique key is held; nothing changed.
            CrossSlotError: Redis Cluster, the messages go to several queues; nothing changed.
        """
        ...


def check_distinct(completions: Sequence[Completion]) -> None:
    """Refuse two completions of one task: the second would find the first's work done.

    Raises:
        ValueError: a task appears twice.
    """
    seen: set[tuple[str, str]] = set()
    for c in completions:
        key = (c.lease.task.queue, c.lease.task.id)
        if key in seen:
            raise ValueError(f"task {key[1]!r} of queue {key[0]!r} is completed twice")
        seen.add(key)
