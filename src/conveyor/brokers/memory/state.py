"""The memory broker's state: its tasks, queues and waiters, shared by its mixins.

Every function and method that reads or changes it holds ``_State.lock``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from conveyor.brokers.memory import throughput as minute_totals
from conveyor.brokers.memory.history import AttemptEntries
from conveyor.brokers.memory.limits import LimitState
from conveyor.brokers.memory.results import ResultWaiters
from conveyor.brokers.memory.workflows import WorkflowStore
from conveyor.brokers.schedules import ScheduleRecord
from conveyor.brokers.workers import WorkerInfo
from conveyor.message import TaskInfo, TaskMessage, TaskState, to_datetime

__all__ = ["WAITING"]

WAITING = frozenset({TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY})


@dataclass(slots=True)
class _Task:
    msg: TaskMessage
    seq: int  # enqueue sequence: the FIFO tie-breaker
    state: TaskState
    enqueued_at: float
    ready_at: float  # when a waiting task is (or was) ready; kept while ACTIVE for release
    since: float  # when the task entered its current state (orders non-waiting listings)
    heap_mark: int = -1  # matches the task's live heap entry; any other entry is stale
    token: int = 0  # the fencing token of the current (or last) claim
    lease_expires_at: float = 0.0
    retried: int = 0
    crashes: int = 0  # leases lost (recover_expired); max_crashes of them archive the task
    last_error: str | None = None
    last_failed_at: float | None = None
    completed_at: float | None = None
    result: bytes | None = None
    progress: bytes | None = None  # a pipeline's progress document: lives and dies with the task
    history: AttemptEntries | None = None  # failed attempts (history.py); None until one fails


@dataclass(slots=True)
class _Queue:
    tasks: dict[str, _Task] = field(default_factory=dict)
    # Heaps of (ready_at, seq, task id, heap_mark): PENDING tasks, claimable whatever their ready
    # time (it only orders them, so a clock stepping back never holds up immediate work), and
    # SCHEDULED/RETRY tasks, claimable once due. Entries are never removed in place: a task
    # leaving the waiting states gets a new mark, and claim skips entries whose mark is stale.
    pending: list[tuple[float, int, str, int]] = field(default_factory=list)
    due: list[tuple[float, int, str, int]] = field(default_factory=list)
    paused: bool = False


@dataclass(slots=True)
class _Waiter:
    queues: frozenset[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    woken: bool = False


@dataclass(slots=True)
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    queues: dict[str, _Queue] = field(default_factory=dict)
    locks: dict[tuple[str, str], tuple[str, float | None]] = field(default_factory=dict)
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (queue, day, what)
    minutes: minute_totals.MinuteCounts = field(default_factory=Counter)
    waiters: list[_Waiter] = field(default_factory=list)
    counter: Iterator[int] = field(default_factory=itertools.count)
    schedules: dict[str, ScheduleRecord] = field(default_factory=dict)  # see schedules.py
    # The worker registry (memory/workers.py): id -> (record, expiry); (queue, id) -> token.
    workers: dict[str, tuple[WorkerInfo, float]] = field(default_factory=dict)
    cancels: dict[tuple[str, str], int] = field(default_factory=dict)
    workflows: WorkflowStore = field(default_factory=WorkflowStore)
    limits: LimitState = field(default_factory=LimitState)  # flow control (limits.py)
    result_waiters: ResultWaiters = field(default_factory=dict)  # see results.py


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def _info(t: _Task) -> TaskInfo:
    return TaskInfo.from_message(
        t.msg,
        state=t.state,
        enqueued_at=to_datetime(t.enqueued_at),
        next_process_at=to_datetime(t.ready_at) if t.state in WAITING else None,
        retried=t.retried,
        last_error=t.last_error,
        last_failed_at=to_datetime(t.last_failed_at),
        completed_at=to_datetime(t.completed_at),
        raw_result=t.result,
    )
