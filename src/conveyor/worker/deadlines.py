"""DeadlineSweep: one loop timer for the time limits of every running attempt.

A timer per attempt (``asyncio.timeout``) costs a timer handle, its heap entry and a context
manager for every task, a measurable share of a short task's cost at thousands of tasks a
second. Here each attempt's limit is one entry in a heap of our own, and one loop timer is armed
for the earliest; when it fires, the overdue attempts are handed to ``on_expired``. Entries of
attempts that ended first are dropped lazily: marked dead, and the heap is rebuilt from the live
ones when it grows past twice their number (limits are usually far longer than tasks).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["DeadlineSweep", "Watch"]

T = TypeVar("T")

# Rebuild the heap when it holds more than this many entries beyond twice the live ones.
_SLACK = 64


class Watch(Generic[T]):
    """One watched item's heap entry; :meth:`DeadlineSweep.forget` takes it back."""

    __slots__ = ("item", "seq", "when")

    def __init__(self, when: float, seq: int, item: T | None) -> None:
        self.when = when
        self.seq = seq
        self.item = item  # None once forgotten or expired

    def __lt__(self, other: Watch[T]) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)


class DeadlineSweep(Generic[T]):
    """Calls ``on_expired(item)`` once an item's limit passes, unless it was forgotten first.

    Args:
        on_expired: called from the event loop with each overdue item, earliest first.
    """

    def __init__(self, on_expired: Callable[[T], None]) -> None:
        self._on_expired = on_expired
        self._heap: list[Watch[T]] = []
        self._live = 0
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")

    @property
    def watched(self) -> int:
        """Items being watched (neither expired nor forgotten)."""
        return self._live

    def watch(self, item: T, seconds: float) -> Watch[T]:
        """Expire ``item`` ``seconds`` from now (loop clock); keep the result to forget it."""
        loop = asyncio.get_running_loop()
        entry = Watch(loop.time() + seconds, next(self._seq), item)
        heapq.heappush(self._heap, entry)
        self._live += 1
        if entry.when < self._armed_for:
            self._arm(loop, entry.when)
        return entry

    def forget(self, entry: Watch[T]) -> None:
        """Stop watching (the item ended in time); a no-op once expired or forgotten."""
        if entry.item is None:
            return
        entry.item = None
        self._live -= 1
        if len(self._heap) > 2 * self._live + _SLACK:
            self._heap = [e for e in self._heap if e.item is not None]
            heapq.heapify(self._heap)

    def close(self) -> None:
        """Cancel the timer; nothing more expires."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = float("inf")
        self._heap.clear()
        self._live = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._armed_for = when

    def _fire(self) -> None:
        self._timer, self._armed_for = None, float("inf")
        loop = asyncio.get_running_loop()
        now = loop.time()
        # on_expired may forget other entries, which can rebuild the heap: never hold on to it.
        while self._heap and (self._heap[0].item is None or self._heap[0].when <= now):
            entry = heapq.heappop(self._heap)
            item = entry.item
            if item is None:
                continue
            entry.item = None
            self._live -= 1
            self._on_expired(item)
        if self._heap:
            self._arm(loop, self._heap[0].when)
