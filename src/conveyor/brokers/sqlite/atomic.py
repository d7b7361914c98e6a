"""All-or-nothing completion on the SQLite broker (see :mod:`conveyor.brokers.atomic`).

One write transaction: each completion is applied as ``complete`` applies it, and a lost lease
or a refused successor rolls the whole transaction back, so nothing of the call is kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from conveyor.brokers.atomic import check_distinct
from conveyor.brokers.sqlite import limits
from conveyor.message import Completion, TaskInfo, TaskMessage

if TYPE_CHECKING:
    from conveyor.brokers.sqlite.store import Store

T = TypeVar("T")


class _LeaseLost(Exception):
    """Raised inside the transaction to roll it back."""


def _complete_all(store: Store, completions: Sequence[Completion]) -> bool:
    ready = False
    try:
        with store.write() as now:
            counts: Counter[tuple[str, bool]] = Counter()
            for c in completions:
                if not store._complete_one(c, now):
                    raise _LeaseLost
                counts[(c.lease.task.queue, False)] += 1
                ready = ready or bool(c.successors)
            store._count(counts, now)
            queues = {c.lease.task.queue for c in completions}
            ready = ready or limits.slots_watched(store.conn, queues)  # a freed slot may start one
    except _LeaseLost:
        return False
    if ready:
        store.notify_ready()
    return True


class SqliteAtomicCompletion:
    """The :class:`~conveyor.brokers.atomic.AtomicCompletion` method of ``SqliteBroker``."""

    if TYPE_CHECKING:

        async def enqueue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]: ...

        async def _run(self, operation: Callable[[Store], T]) -> T: ...

    async def enqueue_all(self, messages: Sequence[TaskMessage]) -> None:
        """Store ``messages`` all or nothing (``enqueue`` already is)."""
        await self.enqueue(messages)

    async def complete_all(self, completions: Sequence[Completion]) -> bool:
        """Apply every completion and its successors in one transaction, or nothing."""
        check_distinct(completions)
        return await self._run(lambda store: _complete_all(store, completions))


if TYPE_CHECKING:
    from conveyor.brokers.atomic import AtomicCompletion
    from conveyor.brokers.sqlite.broker import SqliteBroker

    def _conforms(b: SqliteBroker) -> AtomicCompletion:
        return b
