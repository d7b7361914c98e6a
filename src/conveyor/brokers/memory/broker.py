"""The in-process reference broker: the readable specification of broker semantics.

Every backend (memory, sqlite, redis) behaves exactly as written here, and the conformance suite in
``tests/conformance/`` checks it. Time is the broker clock (``MemoryBroker.clock``, ``time.time``
by default), in seconds since the epoch.

Tasks and ids
    A task is keyed by ``(queue, id)``. ``enqueue`` is all or nothing: every message of the batch is
    checked before any is stored. An id conflicts with any stored task of that queue, in any state
    (retained COMPLETED and ARCHIVED included), and with an earlier message of the same batch.
    A message is SCHEDULED when ``process_at`` (absolute; it wins over ``process_in_s``) or
    ``now + process_in_s`` is in the future, otherwise PENDING.

Unique locks
    ``unique_key`` is scoped per queue. The lock lives until ``unique_ttl_s`` passes (for ever when
    it is ``None``), the task completes, or the task is deleted. Retry and archive keep it.

Ordering
    Each waiting task (PENDING, SCHEDULED, RETRY) has a *ready time*: its enqueue time when
    immediate, its due time when scheduled or retried, "now" when the inspector runs it. Within a
    queue tasks are claimed by ready time, ties by enqueue sequence, so due SCHEDULED/RETRY tasks
    mix with PENDING ones in the order they became ready. A released task keeps its ready time and
    so goes back to the front. A PENDING task is claimable whatever its ready time (the time
    only orders it), so a broker clock that steps back never holds up immediate work.

Claims and leases
    ``claim`` tries queues in the given order (that order *is* the priority), skips paused queues,
    and takes ready tasks (due time <= now) until ``limit``. Each becomes ACTIVE with a lease
    expiring at ``now + lease_s`` and a fresh fencing token. Tokens strictly increase per task and
    never repeat for a ``(queue, id)``, even after the task is deleted and enqueued again (a
    zombie's late ack must not match the new task); memory draws them from one broker-wide counter.
    Every later transition of the attempt (complete, retry, archive, release, extend) must present
    the token of the current ACTIVE claim; otherwise ``complete``/``extend_leases`` report
    ``False``, the others raise ``LeaseLostError``, and nothing changes. A lapsed lease not yet
    recovered is still valid.

Outcomes
    ``TaskInfo.retried`` counts *failed* attempts: retry, archive and recovery add one; claim and
    release do not. ``complete`` releases the unique lock, keeps the task COMPLETED with its result
    and ``completed_at`` when ``retention_s > 0`` (else deletes it), and enqueues its ``successors``
    in the same step, checked like ``enqueue``: on a conflict ``complete`` raises the enqueue error
    and that completion (and any after it in the call) is not applied. ``retry``/``archive`` record
    ``last_error`` and ``last_failed_at``, and every failed attempt (recovery too) adds a record
    to the task's attempt history in the same step (``history.py``). ``recover_expired`` treats
    each ACTIVE task whose lease expiry < now as a failed attempt with ``LEASE_EXPIRED_ERROR``:
    RETRY due in ``delay_s``, or ARCHIVED when ``retried + 1 > max_retry``. ``purge_expired``
    deletes COMPLETED tasks whose ``completed_at + retention_s <= now`` and expired unique locks,
    and returns the number of tasks deleted.

Counters
    Per queue and UTC day (broker clock): each completion counts one processed; each failed attempt
    (retry, archive, recovery) counts one processed and one failed. Inspector operations count
    nothing.

Inspector
    ``delete_task`` refuses ACTIVE tasks, ``run_task`` takes SCHEDULED/RETRY/ARCHIVED to PENDING
    (ready now, ``retried`` kept), ``archive_task`` takes PENDING/SCHEDULED/RETRY to ARCHIVED (not
    a failure). Each raises ``TaskNotFoundError`` (with ``task_id``/``queue``) when the task is
    missing or in a state the operation does not apply to. The bulk ``*_tasks`` forms act on every
    task in one state and return how many they changed (0 for a state they do not apply to).
    ``list_tasks`` orders waiting tasks by ready time and others by when they entered their state.
    ``list_queues`` names every queue ever enqueued to or paused. ``delete_queue`` forgets a queue
    (tasks, unique locks, counters, pause flag); without ``force`` it refuses a queue holding any
    task (``QueueNotEmptyError``), and even with ``force`` one holding an ACTIVE task
    (``QueueInUseError``). An unknown queue is a no-op. Fencing tokens come from the broker-wide
    counter, so they still never repeat for a task re-created in the same queue.

Flow control
    Queue length, rate and concurrency limits (``limits.py``, :mod:`conveyor.brokers.limits`):
    ``enqueue`` applies the queue limits after its other checks, ``claim`` passes over a queue
    at its concurrency limit and holds back (SCHEDULED) a task over its type's limits.

Waiting
    ``wait_for_tasks`` returns as soon as a task is ready in one of its unpaused queues (at once if
    one already is: a task enqueued between a worker's empty claim and its wait must not be missed),
    when the earliest SCHEDULED/RETRY task there falls due, or at the timeout.

Sharing
    ``MemoryBroker()`` is private to its object. ``MemoryBroker.from_url("memory://name")`` (or
    ``MemoryBroker(name="name")``) returns a handle on the state shared by every handle with that
    name in this process, so a client and a worker given the same URL see the same queues;
    ``memory://`` is the name ``""``. Closing a handle closes only that handle (later calls on it
    raise ``BrokerUnavailableError``). Named state lives as long as the process. All methods
    are thread-safe: a sync facade running its own event loop in another thread works.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from conveyor.brokers.memory import throughput as minute_totals
from conveyor.brokers.memory.atomic import MemoryAtomicCompletion
from conveyor.brokers.memory.history import MemoryHistory, record_attempt
from conveyor.brokers.memory.inspection import MemoryInspection
from conveyor.brokers.memory.limits import MemoryLimits
from conveyor.brokers.memory.progress import MemoryProgress
from conveyor.brokers.memory.results import MemoryResults, wake_waiters
from conveyor.brokers.memory.schedules import MemorySchedules
from conveyor.brokers.memory.state import _day, _info, _Queue, _State, _Task, _Waiter
from conveyor.brokers.memory.workers import MemoryWorkersMixin
from conveyor.brokers.memory.workflow_steps import MemoryWorkflowSteps
from conveyor.brokers.memory.workflows import MemoryWorkflows
from conveyor.brokers.protocol import (
    DAILY_TOTALS_KEPT_DAYS,
    LEASE_EXPIRED_ERROR,
    MAX_CRASH_ATTEMPTS,
    Broker,
    BrokerInfo,
    Capabilities,
    crash_limit_error,
    recover_spread,
)
from conveyor.brokers.schedules import ScheduleStore
from conveyor.brokers.throughput import Throughput
from conveyor.brokers.workers import WorkerRegistry
from conveyor.config import redact_url, split_broker_url
from conveyor.errors import (
    BrokerUnavailableError,
    ConfigError,
    DuplicateTaskError,
    LeaseLostError,
    TaskIdConflictError,
)
from conveyor.message import (
    Completion,
    Lease,
    TaskInfo,
    TaskMessage,
    TaskState,
)

__all__ = ["MemoryBroker"]


# The one deliberate process-wide registry: memory:// URLs name shared state (see "Sharing").
_NAMED: dict[str, _State] = {}
_NAMED_LOCK = threading.Lock()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class MemoryBroker(
    MemoryWorkflowSteps,
    MemoryWorkflows,
    MemoryProgress,
    MemoryHistory,
    MemorySchedules,
    MemoryWorkersMixin,
    MemoryLimits,
    MemoryResults,
    MemoryAtomicCompletion,
    MemoryInspection,
):
    """An in-process broker: fast, nothing persisted, the reference for every other backend.

    Example::

        broker = MemoryBroker.from_url("memory://demo")
        await broker.enqueue([TaskMessage(id=str(new_task_id()), type="ping")])
        leases = await broker.claim(["default"], limit=1, lease_s=30)

    Args:
        clock: the broker clock, seconds since the epoch; swap it in tests.
        name: share state with every other ``MemoryBroker`` of this name in the process;
            ``None`` (the default) keeps the state private to this object.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, name: str | None = None) -> None:
        self.clock = clock
        self._name = name
        self._closed = False
        if name is None:
            self._state = _State()
        else:
            with _NAMED_LOCK:
                self._state = _NAMED.setdefault(name, _State())

    @classmethod
    def from_url(cls, url: str) -> MemoryBroker:
        """A handle on the shared state named by ``memory://name`` (``memory://`` is ``""``).

        Raises:
            ConfigError: the URL is not of the form ``memory://[name]``.
        """
        parts = split_broker_url(url)
        if parts.scheme != "memory" or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"memory broker URL must be memory://[name], got {redact_url(url)!r}")
        return cls(name=parts.netloc)

    @property
    def capabilities(self) -> Capabilities:
        """In-process only, and nothing survives the process."""
        return Capabilities(shared_across_processes=False, persistent=False)

    async def describe(self) -> BrokerInfo:
        """Report the backend; an in-memory broker has nothing to check."""
        where = "memory (private)" if self._name is None else f"memory://{self._name}"
        return BrokerInfo(
            backend="memory",
            location=where,
            durability="nothing: tasks live in this process's memory and vanish when it exits",
        )

    async def close(self) -> None:
        """Close this handle (idempotent); shared state stays for the other handles."""
        if self._closed:
            return
        self._closed = True
        with self._state.lock:
            self._notify(self._state, None)  # waiters on this handle must not sleep on

    # -- internals: every caller holds the state lock ------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_State]:
        if self._closed:
            raise BrokerUnavailableError("memory broker is closed")
        with self._state.lock:
            yield self._state

    @staticmethod
    def _notify(s: _State, queue: str | None) -> None:
        for w in s.waiters:
            if not w.woken and (queue is None or queue in w.queues):
                # Wake each waiter once: a 10k-task batch must not write 10k times to the loop's
                # self-pipe.
                w.woken = True
                with contextlib.suppress(RuntimeError):  # the waiter's loop has closed
                    w.loop.call_soon_threadsafe(_wake, w.future)

    def _to_waiting(
        self, s: _State, t: _Task, state: TaskState, ready_at: float, now: float
    ) -> None:
        t.state, t.ready_at, t.since = state, ready_at, now
        t.heap_mark = next(s.counter)
        q = s.queues[t.msg.queue]
        heap = q.pending if state is TaskState.PENDING else q.due
        heapq.heappush(heap, (ready_at, t.seq, t.msg.id, t.heap_mark))
        # Wake waiters even for a future ready time: they recompute how long to sleep.
        self._notify(s, t.msg.queue)

    @staticmethod
    def _to_settled(s: _State, t: _Task, state: TaskState, now: float) -> None:
        t.state, t.since, t.heap_mark = state, now, next(s.counter)
        if s.result_waiters:  # someone waits on a task's result (client.wait)
            wake_waiters(s.result_waiters, (t.msg.queue, t.msg.id))

    @staticmethod
    def _head(q: _Queue, heap: list[tuple[float, int, str, int]]) -> _Task | None:
        """The first live task of one of ``q``'s heaps (dropping stale entries), due or not."""
        while heap:
            _, _, task_id, mark = heap[0]
            t = q.tasks.get(task_id)
            if t is not None and t.heap_mark == mark:
                return t
            heapq.heappop(heap)
        return None

    def _next_ready(self, q: _Queue, now: float) -> list[tuple[float, int, str, int]] | None:
        """The heap whose head is claimed next: any pending task, or a due one, by (ready, seq)."""
        pending, due = self._head(q, q.pending), self._head(q, q.due)
        if due is not None and due.ready_at > now:
            due = None
        if pending is None:
            return None if due is None else q.due
        if due is not None and (due.ready_at, due.seq) < (pending.ready_at, pending.seq):
            return q.due
        return q.pending

    def _lock_held(
        self, s: _State, queue: str, key: str, now: float, owner: tuple[str, str] | None = None
    ) -> bool:
        """Whether a live lock on ``key`` bars a new task (its ``owner`` may reuse it)."""
        held = s.locks.get((queue, key))
        if held is None or (held[1] is not None and held[1] <= now):
            return False
        return owner is None or (queue, held[0]) != owner

    def _check_new(
        self,
        s: _State,
        messages: Sequence[TaskMessage],
        now: float,
        owner: tuple[str, str] | None = None,
    ) -> None:
        ids: set[tuple[str, str]] = set()
        keys: set[tuple[str, str]] = set()
        for m in messages:
            q = s.queues.get(m.queue)
            if (m.queue, m.id) in ids or (q is not None and m.id in q.tasks):
                raise TaskIdConflictError(
                    f"task {m.id!r} already exists in queue {m.queue!r}",
                    task_id=m.id,
                    queue=m.queue,
                )
            ids.add((m.queue, m.id))
            if m.unique_key is None:
                continue
            if (m.queue, m.unique_key) in keys or self._lock_held(
                s, m.queue, m.unique_key, now, owner
            ):
                raise DuplicateTaskError(
                    f"unique key {m.unique_key!r} is held in queue {m.queue!r}",
                    task_id=m.id,
                    queue=m.queue,
                )
            keys.add((m.queue, m.unique_key))

    def _store(self, s: _State, m: TaskMessage, now: float) -> _Task:
        due = m.process_at
        if due is None and m.process_in_s is not None:
            due = now + m.process_in_s
        t = _Task(
            msg=m,
            seq=next(s.counter),
            state=TaskState.PENDING,
            enqueued_at=now,
            ready_at=now,
            since=now,
        )
        s.queues.setdefault(m.queue, _Queue()).tasks[m.id] = t
        if m.unique_key is not None:
            expires = None if m.unique_ttl_s is None else now + m.unique_ttl_s
            s.locks[(m.queue, m.unique_key)] = (m.id, expires)
        if due is not None and due > now:
            self._to_waiting(s, t, TaskState.SCHEDULED, due, now)
        else:
            self._to_waiting(s, t, TaskState.PENDING, now, now)
        return t

    @staticmethod
    def _unlock(s: _State, t: _Task) -> None:
        if t.msg.unique_key is None:
            return
        key = (t.msg.queue, t.msg.unique_key)
        if key in s.locks and s.locks[key][0] == t.msg.id:  # never free a later holder's lock
            del s.locks[key]

    def _active(self, s: _State, lease: Lease) -> _Task | None:
        q = s.queues.get(lease.task.queue)
        t = None if q is None else q.tasks.get(lease.task.id)
        if t is None or t.state is not TaskState.ACTIVE or t.token != lease.token:
            return None
        return t

    def _leased(self, s: _State, lease: Lease) -> _Task:
        t = self._active(s, lease)
        if t is None:
            raise LeaseLostError(task_id=lease.task.id, queue=lease.task.queue)
        return t

    def _count(self, s: _State, queue: str, now: float, *, failed: bool) -> None:
        s.counts[(queue, _day(now), "processed")] += 1
        if failed:
            s.counts[(queue, _day(now), "failed")] += 1
        minute_totals.count_minute(s.minutes, queue, now, failed=failed)

    def _fail(self, s: _State, t: _Task, error: str, now: float) -> None:
        t.retried += 1
        t.last_error, t.last_failed_at = error, now
        record_attempt(t, error, now)  # its retry history (history.py), in this same step
        self._count(s, t.msg.queue, now, failed=True)

    def _delete(self, s: _State, t: _Task) -> None:
        self._unlock(s, t)
        del s.queues[t.msg.queue].tasks[t.msg.id]

    # -- producing and consuming ---------------------------------------------------------------

    async def enqueue(self, messages: Sequence[TaskMessage]) -> list[TaskInfo]:
        """Store tasks, all or nothing (see the module docstring for every rule)."""
        with self._locked() as s:
            now = self.clock()
            self._check_new(s, messages, now)
            self._admit(s, messages, now)
            return [_info(self._store(s, m, now)) for m in messages]

    async def claim(self, queues: Sequence[str], *, limit: int, lease_s: float) -> list[Lease]:
        """Claim up to ``limit`` ready tasks, trying ``queues`` in order, skipping paused ones."""
        with self._locked() as s:
            now = self.clock()
            leases: list[Lease] = []
            held: Counter[str] = Counter()  # tasks held back by a rate limit, per type
            for name in dict.fromkeys(queues):
                q = s.queues.get(name)
                if q is None or q.paused:
                    continue
                room = self._room(s, name, now)  # its concurrency limit (limits.py)
                while len(leases) < limit and room > 0:
                    if (heap := self._next_ready(q, now)) is None:
                        break
                    t = q.tasks[heapq.heappop(heap)[2]]
                    if self._holds_back(s, t, now, held):  # over a limit: SCHEDULED for now
                        continue
                    room -= 1
                    t.token = next(s.counter)
                    t.lease_expires_at = now + lease_s
                    self._to_settled(s, t, TaskState.ACTIVE, now)
                    self._started(s, t)
                    leases.append(
                        Lease(task=_info(t), token=t.token, expires_at=t.lease_expires_at)
                    )
            return leases

    async def wait_for_tasks(self, queues: Sequence[str], timeout_s: float) -> None:
        """Return once a task is ready in an unpaused queue of ``queues``, or at ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._closed:
            with self._locked() as s:
                now = self.clock()
                live = [
                    q
                    for n in set(queues)
                    if (q := s.queues.get(n)) and not q.paused and not self._queue_full(s, n)
                ]
                if any(self._head(q, q.pending) for q in live):
                    return
                if any(self._slot_free(s, n) for n in set(queues)):  # limits.py
                    return
                heads = [self._head(q, q.due) for q in live]
                ready_at = min((t.ready_at for t in heads if t is not None), default=None)
                remaining = deadline - loop.time()
                if (ready_at is not None and ready_at <= now) or remaining <= 0:
                    return
                if ready_at is not None:  # wake when the earliest scheduled/retry task is due
                    remaining = min(remaining, ready_at - now)
                waiter = _Waiter(frozenset(queues), loop, loop.create_future())
                s.waiters.append(waiter)
            try:
                await asyncio.wait([waiter.future], timeout=remaining)
            finally:
                with s.lock:
                    s.waiters.remove(waiter)

    async def extend_leases(self, leases: Sequence[Lease], lease_s: float) -> list[bool]:
        """Push each still-held lease to ``now + lease_s``; ``False`` for each lost one."""
        with self._locked() as s:
            now = self.clock()
            held = [self._active(s, lease) for lease in leases]
            for t in held:
                if t is not None:
                    t.lease_expires_at = now + lease_s
            return [t is not None for t in held]

    async def complete(self, completions: Sequence[Completion]) -> list[bool]:
        """Record successes and enqueue their successors; ``False`` for each lost lease."""
        with self._locked() as s:
            return self._complete_locked(s, completions, self.clock())

    def _complete_locked(
        self, s: _State, completions: Sequence[Completion], now: float
    ) -> list[bool]:
        done: list[bool] = []
        for c in completions:
            t = self._active(s, c.lease)
            if t is None:
                done.append(False)
                continue
            self._check_new(s, c.successors, now, owner=(t.msg.queue, t.msg.id))
            self._unlock(s, t)
            if t.msg.retention_s > 0:
                t.result, t.completed_at = c.result, now
                self._to_settled(s, t, TaskState.COMPLETED, now)
            else:
                del s.queues[t.msg.queue].tasks[t.msg.id]
            self._count(s, t.msg.queue, now, failed=False)
            self._freed(s, t)  # its concurrency slot (limits.py)
            for m in c.successors:
                self._store(s, m, now)
            done.append(True)
        return done

    async def retry(self, lease: Lease, *, error: str, delay_s: float) -> None:
        """Record a failed attempt; the task waits in RETRY until ``now + delay_s``."""
        with self._locked() as s:
            now = self.clock()
            t = self._leased(s, lease)
            self._fail(s, t, error, now)
            self._to_waiting(s, t, TaskState.RETRY, now + delay_s, now)

    async def archive(self, lease: Lease, *, error: str) -> None:
        """Record a failed attempt and move the task to ARCHIVED."""
        with self._locked() as s:
            now = self.clock()
            t = self._leased(s, lease)
            self._fail(s, t, error, now)
            self._to_settled(s, t, TaskState.ARCHIVED, now)
            self._on_archived(s, t, now)  # a workflow step: fail its workflow in this step
            self._freed(s, t)  # its concurrency slot (limits.py)

    async def release(self, lease: Lease) -> None:
        """Give the task back: PENDING with its original ready time, no failure counted."""
        with self._locked() as s:
            t = self._leased(s, lease)
            self._to_waiting(s, t, TaskState.PENDING, t.ready_at, self.clock())

    async def recover_expired(
        self, *, delay_s: float, max_crashes: int = MAX_CRASH_ATTEMPTS
    ) -> int:
        """Fail every ACTIVE task whose lease expired: RETRY, or ARCHIVED when out of retries
        or at its ``max_crashes``-th lost lease."""
        with self._locked() as s:
            now = self.clock()
            lapsed = [
                t
                for q in s.queues.values()
                for t in q.tasks.values()
                if t.state is TaskState.ACTIVE and t.lease_expires_at < now
            ]
            for t in lapsed:
                t.crashes += 1
                poison = t.crashes >= max_crashes
                self._fail(
                    s, t, crash_limit_error(max_crashes) if poison else LEASE_EXPIRED_ERROR, now
                )
                if poison or t.retried > t.msg.max_retry:
                    self._to_settled(s, t, TaskState.ARCHIVED, now)
                    self._on_archived(s, t, now)  # a workflow step: fail its workflow too
                else:
                    due = now + delay_s * recover_spread(t.msg.id, t.crashes)
                    self._to_waiting(s, t, TaskState.RETRY, due, now)
            return len(lapsed)

    async def purge_expired(self) -> int:
        """Delete COMPLETED tasks past retention and expired unique locks; return tasks deleted."""
        with self._locked() as s:
            now = self.clock()
            for key, (_, expires) in list(s.locks.items()):
                if expires is not None and expires <= now:
                    del s.locks[key]
            oldest_kept = _day(now - DAILY_TOTALS_KEPT_DAYS * 86400)
            for count_key in [k for k in s.counts if k[1] < oldest_kept]:
                del s.counts[count_key]
            minute_totals.purge_minutes(s.minutes, now)
            old = [
                t
                for q in s.queues.values()
                for t in q.tasks.values()
                if t.state is TaskState.COMPLETED
                and (t.completed_at or 0.0) + t.msg.retention_s <= now
            ]
            for t in old:
                self._delete(s, t)
            return len(old)


def _conforms(b: MemoryBroker) -> Broker:
    return b


def _stores_schedules(b: MemoryBroker) -> ScheduleStore:
    return b


def _registers(b: MemoryBroker) -> WorkerRegistry:
    return b


def _counts_minutes(b: MemoryBroker) -> Throughput:
    return b
