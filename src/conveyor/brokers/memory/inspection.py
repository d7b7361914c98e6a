"""The Inspector's half of :class:`~conveyor.brokers.memory.MemoryBroker` (a mixin): reading
queues and tasks, and acting on them by hand (see the "Inspector" rules in ``broker.py``).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from conveyor.brokers.memory import throughput as minute_totals
from conveyor.brokers.memory.state import WAITING, _day, _info, _Queue, _State, _Task
from conveyor.brokers.throughput import MinuteTotals
from conveyor.errors import QueueInUseError, QueueNotEmptyError, TaskNotFoundError
from conveyor.message import QueueStats, TaskInfo, TaskState

__all__ = ["MemoryInspection"]

_RUNNABLE = frozenset({TaskState.SCHEDULED, TaskState.RETRY, TaskState.ARCHIVED})
_ARCHIVABLE = WAITING
_DELETABLE = frozenset(TaskState) - {TaskState.ACTIVE}


def _find(s: _State, queue: str, task_id: str, allowed: frozenset[TaskState], verb: str) -> _Task:
    q = s.queues.get(queue)
    t = None if q is None else q.tasks.get(task_id)
    if t is None or t.state not in allowed:
        why = "" if t is None else f" that can be {verb} (it is {t.state})"
        message = f"no task {task_id!r} in queue {queue!r}{why}"
        raise TaskNotFoundError(message, task_id=task_id, queue=queue)
    return t


def _in_state(
    s: _State, queue: str, state: TaskState, allowed: frozenset[TaskState]
) -> list[_Task]:
    q = s.queues.get(queue)
    if q is None or state not in allowed:
        return []
    return [t for t in q.tasks.values() if t.state is state]


class MemoryInspection:
    """Listing, reading and hand-steering tasks and queues (a mixin of ``MemoryBroker``)."""

    if TYPE_CHECKING:  # provided by MemoryBroker and its other mixins
        clock: Callable[[], float]

        def _locked(self) -> contextlib.AbstractContextManager[_State]: ...
        def _delete(self, s: _State, t: _Task) -> None: ...
        def _to_waiting(
            self, s: _State, t: _Task, state: TaskState, ready_at: float, now: float
        ) -> None: ...
        @staticmethod
        def _to_settled(s: _State, t: _Task, state: TaskState, now: float) -> None: ...
        @staticmethod
        def _notify(s: _State, queue: str | None) -> None: ...
        def _step_deleted(self, s: _State, t: _Task, now: float) -> None: ...
        def _step_archived(self, s: _State, t: _Task, now: float) -> None: ...

    async def list_queues(self) -> list[str]:
        """Every queue ever enqueued to or paused, sorted."""
        with self._locked() as s:
            return sorted(s.queues)

    async def queue_stats(self, queue: str) -> QueueStats:
        """Counts by state, the paused flag and today's (UTC) processed/failed totals."""
        with self._locked() as s:
            q = s.queues.get(queue, _Queue())
            by_state = Counter(t.state for t in q.tasks.values())
            today = _day(self.clock())
            return QueueStats(
                queue=queue,
                pending=by_state[TaskState.PENDING],
                scheduled=by_state[TaskState.SCHEDULED],
                active=by_state[TaskState.ACTIVE],
                retry=by_state[TaskState.RETRY],
                archived=by_state[TaskState.ARCHIVED],
                completed=by_state[TaskState.COMPLETED],
                paused=q.paused,
                processed_today=s.counts[(queue, today, "processed")],
                failed_today=s.counts[(queue, today, "failed")],
            )

    async def list_tasks(
        self, queue: str, state: TaskState, *, offset: int = 0, limit: int = 100
    ) -> list[TaskInfo]:
        """A page of tasks in ``state``: waiting ones by ready time, others by time entered."""
        with self._locked() as s:
            q = s.queues.get(queue, _Queue())
            found = [t for t in q.tasks.values() if t.state is state]
            if state in WAITING:
                found.sort(key=lambda t: (t.ready_at, t.seq))
            else:
                found.sort(key=lambda t: (t.since, t.seq))
            return [_info(t) for t in found[max(offset, 0) : max(offset, 0) + max(limit, 0)]]

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task; raises ``TaskNotFoundError`` when it does not exist."""
        with self._locked() as s:
            return _info(_find(s, queue, task_id, frozenset(TaskState), "read"))

    async def get_tasks(self, tasks: Sequence[tuple[str, str]]) -> list[TaskInfo | None]:
        """Several tasks by ``(queue, id)`` under one lock; ``None`` for one that is not there."""
        with self._locked() as s:
            found: list[TaskInfo | None] = []
            for queue, task_id in tasks:
                q = s.queues.get(queue)
                t = None if q is None else q.tasks.get(task_id)
                found.append(None if t is None else _info(t))
            return found

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not ACTIVE, releasing its unique lock."""
        with self._locked() as s:
            t = _find(s, queue, task_id, _DELETABLE, "deleted")
            self._delete(s, t)
            self._step_deleted(s, t, self.clock())  # a workflow step: its workflow fails

    async def run_task(self, queue: str, task_id: str) -> None:
        """Make a SCHEDULED, RETRY or ARCHIVED task PENDING, ready now."""
        with self._locked() as s:
            t, now = _find(s, queue, task_id, _RUNNABLE, "run"), self.clock()
            self._to_waiting(s, t, TaskState.PENDING, now, now)

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Move a PENDING, SCHEDULED or RETRY task to ARCHIVED."""
        with self._locked() as s:
            t, now = _find(s, queue, task_id, _ARCHIVABLE, "archived"), self.clock()
            self._to_settled(s, t, TaskState.ARCHIVED, now)
            self._step_archived(s, t, now)  # a workflow step: its workflow fails

    async def delete_tasks(self, queue: str, state: TaskState) -> int:
        """Delete every task in ``state``; 0 for ACTIVE."""
        with self._locked() as s:
            found, now = _in_state(s, queue, state, _DELETABLE), self.clock()
            for t in found:
                self._delete(s, t)
                self._step_deleted(s, t, now)
            return len(found)

    async def run_tasks(self, queue: str, state: TaskState) -> int:
        """Make every task in a SCHEDULED, RETRY or ARCHIVED ``state`` PENDING; 0 for others."""
        with self._locked() as s:
            found, now = _in_state(s, queue, state, _RUNNABLE), self.clock()
            for t in found:
                self._to_waiting(s, t, TaskState.PENDING, now, now)
            return len(found)

    async def archive_tasks(self, queue: str, state: TaskState) -> int:
        """Archive every task in a PENDING, SCHEDULED or RETRY ``state``; 0 for others."""
        with self._locked() as s:
            found, now = _in_state(s, queue, state, _ARCHIVABLE), self.clock()
            for t in found:
                self._to_settled(s, t, TaskState.ARCHIVED, now)
                self._step_archived(s, t, now)
            return len(found)

    async def pause_queue(self, queue: str) -> None:
        """Stop claims from ``queue``; enqueueing still works."""
        with self._locked() as s:
            s.queues.setdefault(queue, _Queue()).paused = True

    async def unpause_queue(self, queue: str) -> None:
        """Let claims from ``queue`` resume, waking idle waiters."""
        with self._locked() as s:
            s.queues.setdefault(queue, _Queue()).paused = False
            self._notify(s, queue)

    async def delete_queue(self, queue: str, *, force: bool) -> None:
        """Forget ``queue``: its tasks, unique locks, counters and pause flag (see the protocol)."""
        with self._locked() as s:
            q, gone = s.queues.get(queue), []
            if q is not None:
                if q.tasks and not force:
                    raise QueueNotEmptyError(queue=queue, tasks=len(q.tasks))
                active = sum(t.state is TaskState.ACTIVE for t in q.tasks.values())
                if active:
                    raise QueueInUseError(queue=queue, active=active)
                del s.queues[queue]
                gone = list(q.tasks.values())
            # Counters and locks can outlive the queue entry's tasks: drop them by queue name.
            for lock_key in [k for k in s.locks if k[0] == queue]:
                del s.locks[lock_key]
            for count_key in [k for k in s.counts if k[0] == queue]:
                del s.counts[count_key]
            for cancel_key in [k for k in s.cancels if k[0] == queue]:
                del s.cancels[cancel_key]
            minute_totals.forget_queue(s.minutes, queue)
            # Workflow steps among its tasks fail their workflows (an error callback that runs
            # in this queue starts it afresh, as a later enqueue would).
            now = self.clock()
            for t in gone:
                self._step_deleted(s, t, now)

    async def throughput(self, queue: str, *, minutes: int) -> list[MinuteTotals]:
        """Processed/failed totals of the last ``minutes`` minutes (see ``Throughput``)."""
        with self._locked() as s:
            return minute_totals.read_minutes(s.minutes, queue, minutes, self.clock())
