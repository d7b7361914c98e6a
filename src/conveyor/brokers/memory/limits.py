"""Flow control for the memory broker: the readable specification of :mod:`..limits`.

The limits live in the broker state (``LimitState``) beside the queues. ``MemoryBroker.enqueue``
calls :meth:`MemoryLimits._admit` once its batch passed the id and unique checks (so a refused
batch has changed nothing), and ``MemoryBroker.claim`` asks :meth:`MemoryLimits._held_until`
about each task it pops, all under the broker's lock.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conveyor.brokers.limits import DROPPED_ERROR, FlowControl, QueueLimit, Rate, take_token
from conveyor.errors import BrokerUnavailableError, QueueFullError
from conveyor.message import TaskMessage, TaskState

if TYPE_CHECKING:
    from conveyor.brokers.memory.broker import MemoryBroker, _Queue, _State, _Task

_COUNTED = frozenset({TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY})


@dataclass(slots=True)
class LimitState:
    """Every limit of one memory broker state, and its rate buckets (when each token still
    out was taken, oldest first)."""

    queues: dict[str, QueueLimit] = field(default_factory=dict)
    rates: dict[str, Rate] = field(default_factory=dict)
    buckets: dict[str, list[float]] = field(default_factory=dict)


def _oldest_pending(q: _Queue, n: int) -> list[_Task]:
    """The ``n`` pending tasks that would be claimed first (fewer when there are not as many)."""
    live = [e for e in q.pending if (t := q.tasks.get(e[2])) is not None and t.heap_mark == e[3]]
    return [q.tasks[e[2]] for e in heapq.nsmallest(n, live)]


class MemoryLimits:
    """The :class:`~conveyor.brokers.limits.FlowControl` methods of the memory broker."""

    _state: _State
    _closed: bool

    def _limits(self) -> LimitState:
        if self._closed:
            raise BrokerUnavailableError("memory broker is closed")
        return self._state.limits

    async def set_queue_limit(self, queue: str, limit: QueueLimit | None) -> None:
        """Set or remove ``queue``'s length limit."""
        with self._state.lock:
            if limit is None:
                self._limits().queues.pop(queue, None)
            else:
                self._limits().queues[queue] = limit

    async def queue_limit(self, queue: str) -> QueueLimit | None:
        """``queue``'s length limit, or ``None``."""
        with self._state.lock:
            return self._limits().queues.get(queue)

    async def set_rate_limit(self, task_type: str, rate: Rate | None) -> None:
        """Set or remove ``task_type``'s rate limit (a changed one keeps its tokens out)."""
        with self._state.lock:
            if rate is None:
                self._limits().rates.pop(task_type, None)
                self._limits().buckets.pop(task_type, None)
            else:
                self._limits().rates[task_type] = rate

    async def rate_limits(self) -> dict[str, Rate]:
        """Every task type's rate limit."""
        with self._state.lock:
            return dict(self._limits().rates)

    # -- called by MemoryBroker under the state lock --------------------------------------------

    def _admit(self, s: _State, messages: Sequence[TaskMessage], now: float) -> None:
        """Apply the queue limits to a checked batch before it is stored: raise
        ``QueueFullError`` (nothing changed), or archive the oldest pending tasks to make room."""
        if not s.limits.queues:
            return
        arriving = Counter(m.queue for m in messages)
        drops: list[_Task] = []
        for name, n in arriving.items():
            limit = s.limits.queues.get(name)
            if limit is None:
                continue
            q = s.queues.get(name)
            held = 0 if q is None else sum(t.state in _COUNTED for t in q.tasks.values())
            excess = held + n - limit.max_length
            if excess <= 0:
                continue
            victims = [] if q is None else _oldest_pending(q, excess)
            if limit.overflow == "reject" or len(victims) < excess:
                first = next(m for m in messages if m.queue == name)
                raise QueueFullError(
                    f"queue {name!r} is full ({held} of {limit.max_length} tasks waiting)",
                    task_id=first.id,
                    queue=name,
                )
            drops.extend(victims)
        for t in drops:
            # Archived, not failed: a dropped task never ran, so no attempt or counter moves.
            t.state, t.since, t.heap_mark = TaskState.ARCHIVED, now, next(s.counter)
            t.last_error = DROPPED_ERROR

    def _held_until(self, s: _State, t: _Task, now: float, held: Counter[str]) -> float | None:
        """Take a token for ``t`` from its type's bucket: ``None`` when it may start, else when
        the bucket has a token for it (``held`` counts this claim's earlier holds per type)."""
        rate = s.limits.rates.get(t.msg.type)
        if rate is None:
            return None
        out, wait_until = take_token(
            rate, s.limits.buckets.get(t.msg.type, []), now, held[t.msg.type]
        )
        s.limits.buckets[t.msg.type] = out
        if wait_until is not None:
            held[t.msg.type] += 1
        return wait_until


def _conforms(b: MemoryBroker) -> FlowControl:
    return b
