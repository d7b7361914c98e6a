"""Flow control for the memory broker: the readable specification of :mod:`..limits`.

The limits live in the broker state (``LimitState``) beside the queues. ``MemoryBroker.enqueue``
calls :meth:`MemoryLimits._admit` once its batch passed the id and unique checks (so a refused
batch has changed nothing). ``MemoryBroker.claim`` asks :meth:`MemoryLimits._room` how many
tasks a queue may start (moving back tasks held for a slot now free), asks
:meth:`MemoryLimits._holds_back` about each task it pops, and tells :meth:`MemoryLimits._started`
about each it starts; all under the broker's lock.

Concurrency is counted from state: ``running`` only remembers which tasks were started under a
limit (with their fencing token), and a task counts while it is still ACTIVE under that token,
so every way out of ACTIVE frees its slot with no bookkeeping of its own.
"""

from __future__ import annotations

import heapq
import sys
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conveyor.brokers.limits import (
    CONCURRENCY_RECHECK_S,
    DROPPED_ERROR,
    FlowControl,
    QueueLimit,
    Rate,
    take_token,
)
from conveyor.errors import BrokerUnavailableError, QueueFullError
from conveyor.message import TaskMessage, TaskState

if TYPE_CHECKING:
    from conveyor.brokers.memory.broker import MemoryBroker
    from conveyor.brokers.memory.state import _Queue, _State, _Task

_COUNTED = frozenset({TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY})


@dataclass(slots=True)
class LimitState:
    """Every limit of one memory broker state, and its rate buckets (when each token still
    out was taken, oldest first)."""

    queues: dict[str, QueueLimit] = field(default_factory=dict)
    rates: dict[str, Rate] = field(default_factory=dict)
    buckets: dict[str, deque[float]] = field(default_factory=dict)
    task_concurrency: dict[str, int] = field(default_factory=dict)
    queue_concurrency: dict[str, int] = field(default_factory=dict)
    # ("type", task type) or ("queue", queue) -> {(queue, task id): token} started under it.
    running: dict[tuple[str, str], dict[tuple[str, str], int]] = field(default_factory=dict)
    # (queue, task type) -> heap of (ready time, seq, task id, heap mark) held for a slot.
    held: dict[tuple[str, str], list[tuple[float, int, str, int]]] = field(default_factory=dict)


def _oldest_pending(q: _Queue, n: int) -> list[_Task]:
    """The ``n`` pending tasks that would be claimed first (fewer when there are not as many)."""
    live = [e for e in q.pending if (t := q.tasks.get(e[2])) is not None and t.heap_mark == e[3]]
    return [q.tasks[e[2]] for e in heapq.nsmallest(n, live)]


class MemoryLimits:
    """The :class:`~conveyor.brokers.limits.FlowControl` methods of the memory broker."""

    _state: _State
    _closed: bool

    if TYPE_CHECKING:

        def _to_waiting(
            self, s: _State, t: _Task, state: TaskState, ready_at: float, now: float
        ) -> None: ...

        @staticmethod
        def _notify(s: _State, queue: str | None) -> None: ...

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

    async def set_task_concurrency(self, task_type: str, max_active: int | None) -> None:
        """Set or remove ``task_type``'s concurrency limit."""
        with self._state.lock:
            self._set_concurrency(self._limits().task_concurrency, "type", task_type, max_active)

    async def task_concurrency(self) -> dict[str, int]:
        """Every task type's concurrency limit."""
        with self._state.lock:
            return dict(self._limits().task_concurrency)

    async def set_queue_concurrency(self, queue: str, max_active: int | None) -> None:
        """Set or remove ``queue``'s concurrency limit."""
        with self._state.lock:
            self._set_concurrency(self._limits().queue_concurrency, "queue", queue, max_active)

    async def queue_concurrency(self, queue: str) -> int | None:
        """``queue``'s concurrency limit, or ``None``."""
        with self._state.lock:
            return self._limits().queue_concurrency.get(queue)

    def _set_concurrency(
        self, limits: dict[str, int], kind: str, name: str, max_active: int | None
    ) -> None:
        if max_active is None:
            limits.pop(name, None)
            self._state.limits.running.pop((kind, name), None)
            if kind == "type":  # its held tasks start when due, like any scheduled task
                for key in [k for k in self._state.limits.held if k[1] == name]:
                    del self._state.limits.held[key]
            return
        limits[name] = max_active
        # Tasks already running count against a new limit too.
        found = self._state.limits.running.setdefault((kind, name), {})
        for q in self._state.queues.values():
            for t in q.tasks.values():
                mine = t.msg.type if kind == "type" else t.msg.queue
                if t.state is TaskState.ACTIVE and mine == name:
                    found[(t.msg.queue, t.msg.id)] = t.token

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

    def _running(self, s: _State, key: tuple[str, str]) -> int:
        """How many tasks started under ``key``'s limit are still ACTIVE (forgetting the rest)."""
        found = s.limits.running.get(key)
        if not found:
            return 0
        for (queue, task_id), token in list(found.items()):
            q = s.queues.get(queue)
            t = None if q is None else q.tasks.get(task_id)
            if t is None or t.state is not TaskState.ACTIVE or t.token != token:
                del found[(queue, task_id)]
        return len(found)

    def _slot_free(self, s: _State, queue: str) -> bool:
        """Whether a task of ``queue`` held for a slot of its type could take one now (an idle
        wait then returns at once, so a slot freed while no one waited is never missed)."""
        for task_type, n in s.limits.task_concurrency.items():
            if s.limits.held.get((queue, task_type)) and self._running(s, ("type", task_type)) < n:
                return True
        return False

    def _queue_full(self, s: _State, queue: str) -> bool:
        """Whether ``queue`` is at its concurrency limit (a claim passes it over)."""
        n = s.limits.queue_concurrency.get(queue)
        return n is not None and self._running(s, ("queue", queue)) >= n

    def _room(self, s: _State, queue: str, now: float) -> int:
        """How many tasks ``queue`` may start now; first, its tasks held for a slot of their
        type that is free again go back to the front of the queue."""
        for task_type, n in s.limits.task_concurrency.items():
            heap = s.limits.held.get((queue, task_type))
            free = n - self._running(s, ("type", task_type)) if heap else 0
            while free > 0 and heap:
                ready_at, _, task_id, mark = heapq.heappop(heap)
                t = s.queues[queue].tasks.get(task_id)
                if t is not None and t.heap_mark == mark and t.state is TaskState.SCHEDULED:
                    self._to_waiting(s, t, TaskState.PENDING, ready_at, now)
                    free -= 1
        limit = s.limits.queue_concurrency.get(queue)
        return sys.maxsize if limit is None else limit - self._running(s, ("queue", queue))

    def _holds_back(self, s: _State, t: _Task, now: float, held: Counter[str]) -> bool:
        """Whether popped task ``t`` must wait: its type is at its concurrency limit, or over
        its rate (``held`` counts this claim's rate holds per type). A held task is SCHEDULED."""
        task_type, ready_at = t.msg.type, t.ready_at
        n = s.limits.task_concurrency.get(task_type)
        # Entries of finished tasks only over-count: below the limit, no need to check them.
        found = s.limits.running.get(("type", task_type), {})
        if n is not None and len(found) >= n and self._running(s, ("type", task_type)) >= n:
            self._to_waiting(s, t, TaskState.SCHEDULED, now + CONCURRENCY_RECHECK_S, now)
            heap = s.limits.held.setdefault((t.msg.queue, task_type), [])
            heapq.heappush(heap, (ready_at, t.seq, t.msg.id, t.heap_mark))
            return True
        rate = s.limits.rates.get(task_type)
        if rate is None:
            return False
        until = take_token(
            rate, s.limits.buckets.setdefault(task_type, deque()), now, held[task_type]
        )
        if until is None:
            return False
        held[task_type] += 1
        self._to_waiting(s, t, TaskState.SCHEDULED, until, now)
        return True

    def _freed(self, s: _State, t: _Task) -> None:
        """``t`` left ACTIVE: when its queue was at its concurrency limit, or tasks are held
        for a slot of its type, wake idle workers (they claim at once)."""
        n = s.limits.queue_concurrency.get(t.msg.queue)
        was_full = n is not None and self._running(s, ("queue", t.msg.queue)) == n - 1
        if was_full or s.limits.held.get((t.msg.queue, t.msg.type)):
            self._notify(s, t.msg.queue)

    def _started(self, s: _State, t: _Task) -> None:
        """Count claimed task ``t`` against its type's and queue's concurrency limits."""
        for key, limits in (
            (("type", t.msg.type), s.limits.task_concurrency),
            (("queue", t.msg.queue), s.limits.queue_concurrency),
        ):
            if key[1] in limits:
                s.limits.running.setdefault(key, {})[(t.msg.queue, t.msg.id)] = t.token


def _conforms(b: MemoryBroker) -> FlowControl:
    return b
