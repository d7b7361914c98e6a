"""All-or-nothing completion on the memory broker (see :mod:`conveyor.brokers.atomic`).

Under the broker's one lock: every lease and every successor is checked first, then the
completions are applied exactly as ``complete`` applies them. The checks are at least as strict
as the ones ``complete`` makes on the way, so once they pass nothing can be refused half-way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from conveyor.brokers.atomic import check_distinct
from conveyor.errors import DuplicateTaskError, TaskIdConflictError
from conveyor.message import Completion, Lease, TaskInfo, TaskMessage

if TYPE_CHECKING:
    from conveyor.brokers.memory.state import _State, _Task


class MemoryAtomicCompletion:
    """The :class:`~conveyor.brokers.atomic.AtomicCompletion` method of ``MemoryBroker``."""

    if TYPE_CHECKING:

        async def enqueue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]: ...

        def _locked(self) -> contextlib.AbstractContextManager[_State]: ...

        def _active(self, s: _State, lease: Lease) -> _Task | None: ...

        def _check_new(
            self,
            s: _State,
            messages: Sequence[TaskMessage],
            now: float,
            owner: tuple[str, str] | None = None,
        ) -> None: ...

        def _complete_locked(
            self, s: _State, completions: Sequence[Completion], now: float
        ) -> list[bool]: ...

        clock: Callable[[], float]

    async def enqueue_all(self, messages: Sequence[TaskMessage]) -> None:
        """Store ``messages`` all or nothing (``enqueue`` already is)."""
        await self.enqueue(messages)

    async def complete_all(self, completions: Sequence[Completion]) -> bool:
        """Apply every completion and its successors, or nothing when a lease was lost."""
        check_distinct(completions)
        with self._locked() as s:
            now = self.clock()
            if any(self._active(s, c.lease) is None for c in completions):
                return False
            for c in completions:
                task = c.lease.task
                self._check_new(s, c.successors, now, owner=(task.queue, task.id))
            _check_across(completions)
            done = self._complete_locked(s, completions, now)
            assert all(done)  # checked above, under the same lock
            return True


def _check_across(completions: Sequence[Completion]) -> None:
    """Two successors of different completions may not share an id or a unique key."""
    ids: set[tuple[str, str]] = set()
    keys: set[tuple[str, str]] = set()
    for m in (m for c in completions for m in c.successors):
        if (m.queue, m.id) in ids:
            raise TaskIdConflictError(
                f"task {m.id!r} is pushed twice to queue {m.queue!r}", task_id=m.id, queue=m.queue
            )
        ids.add((m.queue, m.id))
        if m.unique_key is not None:
            if (m.queue, m.unique_key) in keys:
                raise DuplicateTaskError(
                    f"unique key {m.unique_key!r} is used twice in queue {m.queue!r}",
                    task_id=m.id,
                    queue=m.queue,
                )
            keys.add((m.queue, m.unique_key))


if TYPE_CHECKING:
    from conveyor.brokers.atomic import AtomicCompletion
    from conveyor.brokers.memory.broker import MemoryBroker

    def _conforms(b: MemoryBroker) -> AtomicCompletion:
        return b
