"""Model-based test: random sequences of broker calls, checked against a plain Python model.

Hypothesis drives a real broker (memory, an SQLite file, Redis under its own namespace) and a
small model of the task lifecycle through the same steps: enqueue (also with a taken id, and
with unique keys, held until the task finishes or for a TTL),
claim, extend, complete (with and without retention), retry, archive, release, stale calls with
old lease tokens, the inspector's run/archive/delete, pause and unpause, and, where the broker
clock can be moved (memory and SQLite), time passing and lease recovery. After every step each
task's state and failure count, and every queue's counts, must match the model, and the
invariants hold: a task is ACTIVE exactly when the model says a lease is live, tokens never
repeat within a queue, a stale lease changes nothing.

The conformance suite pins each transition with a chosen example; this test looks for the
sequences nobody thought to write down. A failure prints the shrunk sequence of steps.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conveyor.brokers.protocol import Broker, recover_spread
from conveyor.errors import (
    DuplicateTaskError,
    LeaseLostError,
    TaskIdConflictError,
    TaskNotFoundError,
)
from conveyor.message import Completion, Lease, TaskMessage, TaskState
from model import redis_broker

T = TypeVar("T")

QUEUES = ("alpha", "beta")
IDS = tuple(f"t{i}" for i in range(6))
LEASE_S = 30.0
LATER_S = 3600.0  # "not due within this test" for brokers on the real clock
WAITING = {TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY}


@dataclass
class ModelTask:
    """What the model knows of one stored task."""

    queue: str
    state: TaskState
    max_retry: int
    retention: bool
    unique_key: str | None = None
    due: float = 0.0  # model time when a SCHEDULED/RETRY task becomes claimable
    retried: int = 0
    crashes: int = 0  # leases lost to recovery: max_crashes of them archive the task
    token: int | None = None  # the live lease's token while ACTIVE
    lease_expires: float = 0.0


class VirtualClock:
    """A broker clock the test moves forward by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class BrokerModel(RuleBasedStateMachine):
    """One broker, one model, the same steps. Subclasses say which broker."""

    kind = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock: VirtualClock | None = None
        self.cleanup: list[Callable[[], None]] = []
        self.broker = self.open()
        self.tasks: dict[tuple[str, str], ModelTask] = {}
        self.leases: list[Lease] = []  # every lease ever handed out, live or stale
        self.tokens: set[tuple[str, int]] = set()  # tokens are unique per queue at least
        self.paused: set[str] = set()
        # (queue, unique key) -> (holder's id, expiry in model time or None: until it finishes)
        self.locks: dict[tuple[str, str], tuple[str, float | None]] = {}
        self.model_now = 0.0  # model time passed (virtual clock only)

    # -- plumbing --------------------------------------------------------------------------

    def open(self) -> Broker:
        raise NotImplementedError

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.broker.close())
        finally:
            for step in reversed(self.cleanup):
                step()
            self.loop.close()

    def ready(self, queue: str) -> set[str]:
        if queue in self.paused:
            return set()
        return {
            task_id
            for (q, task_id), t in self.tasks.items()
            if q == queue
            and (
                t.state is TaskState.PENDING
                or (t.state in (TaskState.SCHEDULED, TaskState.RETRY) and t.due <= self.model_now)
            )
        }

    def live(self, lease: Lease) -> ModelTask | None:
        t = self.tasks.get((lease.task.queue, lease.task.id))
        if t is None or t.state is not TaskState.ACTIVE or t.token != lease.token:
            return None
        return t

    def lock_held(self, queue: str, key: str) -> bool:
        lock = self.locks.get((queue, key))
        return lock is not None and (lock[1] is None or lock[1] > self.model_now)

    def unlock(self, queue: str, task_id: str) -> None:
        """A finished or deleted task frees its unique lock, unless another task holds it now."""
        t = self.tasks[(queue, task_id)]
        if t.unique_key is not None and self.locks.get((queue, t.unique_key), ("",))[0] == task_id:
            del self.locks[(queue, t.unique_key)]

    def delay(self, later: bool) -> float:
        return LATER_S if later else 0.0

    # -- producing -------------------------------------------------------------------------

    @rule(
        queue=st.sampled_from(QUEUES),
        task_id=st.sampled_from(IDS),
        later=st.booleans(),
        max_retry=st.integers(0, 2),
        retention=st.booleans(),
        unique=st.sampled_from([None, "k0", "k1"]),
        ttl=st.sampled_from([None, 60.0]),
    )
    def enqueue(
        self,
        queue: str,
        task_id: str,
        later: bool,
        max_retry: int,
        retention: bool,
        unique: str | None,
        ttl: float | None,
    ) -> None:
        message = TaskMessage(
            id=task_id,
            type="model:task",
            queue=queue,
            payload=b"{}",
            max_retry=max_retry,
            retention_s=3600.0 if retention else 0.0,
            process_in_s=LATER_S if later else None,
            unique_key=unique,
            unique_ttl_s=ttl if unique else None,
        )
        if (queue, task_id) in self.tasks:
            with pytest.raises(TaskIdConflictError):
                self.run(self.broker.enqueue([message]))
            return
        if unique is not None and self.lock_held(queue, unique):
            with pytest.raises(DuplicateTaskError):
                self.run(self.broker.enqueue([message]))
            return
        [info] = self.run(self.broker.enqueue([message]))
        state = TaskState.SCHEDULED if later else TaskState.PENDING
        assert info.state is state
        self.tasks[(queue, task_id)] = ModelTask(
            queue,
            state,
            max_retry,
            retention,
            unique,
            due=self.model_now + (LATER_S if later else 0.0),
        )
        if unique is not None:
            expires = None if ttl is None else self.model_now + ttl
            self.locks[(queue, unique)] = (task_id, expires)

    # -- consuming -------------------------------------------------------------------------

    @rule(first=st.sampled_from(QUEUES), limit=st.integers(1, 4))
    def claim(self, first: str, limit: int) -> None:
        order = [first] + [q for q in QUEUES if q != first]
        leases = self.run(self.broker.claim(order, limit=limit, lease_s=LEASE_S))
        ready = {q: self.ready(q) for q in order}
        expected = min(limit, sum(len(ids) for ids in ready.values()))
        assert len(leases) == expected, (leases, ready)
        taken = Counter(lease.task.queue for lease in leases)
        for i, queue in enumerate(order):
            # Queues are tried in order: a later queue gives tasks only once earlier ones are dry.
            if taken[queue] < len(ready[queue]):
                assert all(taken[q] == 0 for q in order[i + 1 :]), (order, taken, ready)
                break
        for lease in leases:
            t = self.tasks[(lease.task.queue, lease.task.id)]
            assert lease.task.id in ready[lease.task.queue]
            token = (lease.task.queue, lease.token)
            assert token not in self.tokens, "a fencing token was reused"
            self.tokens.add(token)
            t.state, t.token = TaskState.ACTIVE, lease.token
            t.lease_expires = self.model_now + LEASE_S
            self.leases.append(lease)

    @rule(data=st.data())
    def extend(self, data: st.DataObject) -> None:
        if not self.leases:
            return
        lease = data.draw(st.sampled_from(self.leases))
        [held] = self.run(self.broker.extend_leases([lease], LEASE_S))
        t = self.live(lease)
        assert held is (t is not None)
        if t is not None:
            t.lease_expires = self.model_now + LEASE_S

    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        if not self.leases:
            return
        lease = data.draw(st.sampled_from(self.leases))
        [accepted] = self.run(self.broker.complete([Completion(lease=lease, result=b'"done"')]))
        t = self.live(lease)
        assert accepted is (t is not None)
        if t is None:
            return
        self.unlock(lease.task.queue, lease.task.id)
        if t.retention:
            t.state, t.token = TaskState.COMPLETED, None
        else:
            del self.tasks[(lease.task.queue, lease.task.id)]

    def outcome(self, coro: Coroutine[Any, Any, object], ok: bool, error: type[Exception]) -> bool:
        """Run ``coro``: it must succeed when ``ok``, else raise ``error`` (and change nothing)."""
        if ok:
            self.run(coro)
        else:
            with pytest.raises(error):
                self.run(coro)
        return ok

    @rule(data=st.data(), later=st.booleans())
    def retry(self, data: st.DataObject, later: bool) -> None:
        if not self.leases:
            return
        lease = data.draw(st.sampled_from(self.leases))
        call = self.broker.retry(lease, error="boom", delay_s=self.delay(later))
        if self.outcome(call, (t := self.live(lease)) is not None, LeaseLostError):
            assert t is not None
            t.state, t.token, t.retried = TaskState.RETRY, None, t.retried + 1
            t.due = self.model_now + self.delay(later)

    @rule(data=st.data())
    def archive(self, data: st.DataObject) -> None:
        if not self.leases:
            return
        lease = data.draw(st.sampled_from(self.leases))
        call = self.broker.archive(lease, error="dead")
        if self.outcome(call, (t := self.live(lease)) is not None, LeaseLostError):
            assert t is not None
            t.state, t.token, t.retried = TaskState.ARCHIVED, None, t.retried + 1

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if not self.leases:
            return
        lease = data.draw(st.sampled_from(self.leases))
        call = self.broker.release(lease)
        if self.outcome(call, (t := self.live(lease)) is not None, LeaseLostError):
            assert t is not None
            t.state, t.token = TaskState.PENDING, None

    # -- the inspector's moves -------------------------------------------------------------

    @rule(queue=st.sampled_from(QUEUES), task_id=st.sampled_from(IDS))
    def run_task(self, queue: str, task_id: str) -> None:
        t = self.tasks.get((queue, task_id))
        runnable = t is not None and t.state in (
            TaskState.SCHEDULED,
            TaskState.RETRY,
            TaskState.ARCHIVED,
        )
        if self.outcome(self.broker.run_task(queue, task_id), runnable, TaskNotFoundError):
            assert t is not None
            t.state = TaskState.PENDING

    @rule(queue=st.sampled_from(QUEUES), task_id=st.sampled_from(IDS))
    def archive_task(self, queue: str, task_id: str) -> None:
        t = self.tasks.get((queue, task_id))
        waiting = t is not None and t.state in WAITING
        if self.outcome(self.broker.archive_task(queue, task_id), waiting, TaskNotFoundError):
            assert t is not None
            t.state = TaskState.ARCHIVED

    @rule(queue=st.sampled_from(QUEUES), task_id=st.sampled_from(IDS))
    def delete_task(self, queue: str, task_id: str) -> None:
        t = self.tasks.get((queue, task_id))
        idle = t is not None and t.state is not TaskState.ACTIVE
        if self.outcome(self.broker.delete_task(queue, task_id), idle, TaskNotFoundError):
            self.unlock(queue, task_id)
            del self.tasks[(queue, task_id)]

    @rule(queue=st.sampled_from(QUEUES), pause=st.booleans())
    def pause(self, queue: str, pause: bool) -> None:
        if pause:
            self.run(self.broker.pause_queue(queue))
            self.paused.add(queue)
        else:
            self.run(self.broker.unpause_queue(queue))
            self.paused.discard(queue)

    # -- time (brokers whose clock the test can move) --------------------------------------

    @precondition(lambda self: self.clock is not None)
    @rule(seconds=st.sampled_from([1.0, LEASE_S + 1, LATER_S + 1, -(LEASE_S + 1), -(LATER_S + 1)]))
    def time_passes(self, seconds: float) -> None:
        assert self.clock is not None
        self.clock.now += seconds
        self.model_now += seconds

    @precondition(lambda self: self.clock is not None)
    @rule(later=st.booleans(), max_crashes=st.integers(1, 4))
    def recover(self, later: bool, max_crashes: int) -> None:
        recovered = self.run(
            self.broker.recover_expired(delay_s=self.delay(later), max_crashes=max_crashes)
        )
        lapsed = [
            (task_id, t)
            for (_, task_id), t in self.tasks.items()
            if t.state is TaskState.ACTIVE and t.lease_expires < self.model_now
        ]
        assert recovered == len(lapsed)
        for task_id, t in lapsed:
            t.retried += 1
            t.crashes += 1
            t.token = None
            if t.retried > t.max_retry or t.crashes >= max_crashes:
                t.state = TaskState.ARCHIVED
            else:
                spread = recover_spread(task_id, t.crashes)
                t.state, t.due = TaskState.RETRY, self.model_now + self.delay(later) * spread

    # -- what must hold after every step ---------------------------------------------------

    @invariant()
    def tasks_match(self) -> None:
        for (queue, task_id), t in self.tasks.items():
            info = self.run(self.broker.get_task(queue, task_id))
            assert (info.state, info.retried) == (t.state, t.retried), (queue, task_id, info, t)
        for queue in QUEUES:
            for task_id in IDS:
                if (queue, task_id) not in self.tasks:
                    with pytest.raises(TaskNotFoundError):
                        self.run(self.broker.get_task(queue, task_id))

    @invariant()
    def counts_match(self) -> None:
        for queue in QUEUES:
            stats = self.run(self.broker.queue_stats(queue))
            counts = Counter(t.state for (q, _), t in self.tasks.items() if q == queue)
            seen = {state: getattr(stats, state.value) for state in TaskState}
            assert seen == {state: counts[state] for state in TaskState}, (queue, stats)
            assert stats.paused is (queue in self.paused)


class MemoryModel(BrokerModel):
    def open(self) -> Broker:
        from conveyor.brokers.memory import MemoryBroker

        self.clock = VirtualClock()
        return MemoryBroker(clock=self.clock)


class SqliteModel(BrokerModel):
    def open(self) -> Broker:
        from conveyor.brokers.sqlite import SqliteBroker

        folder = Path(tempfile.mkdtemp(prefix="conveyor-model-"))
        self.cleanup.append(lambda: shutil.rmtree(folder, ignore_errors=True))
        self.clock = VirtualClock()
        return SqliteBroker(folder / "broker.db", clock=self.clock)


class RedisModel(BrokerModel):
    def open(self) -> Broker:
        return redis_broker("conveyor-model", self.cleanup)


SETTINGS = settings(
    max_examples=75,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TestMemoryModel = SETTINGS(MemoryModel).TestCase
TestSqliteModel = SETTINGS(SqliteModel).TestCase


@pytest.mark.usefixtures("_redis_up")
class TestRedisModel(SETTINGS(RedisModel).TestCase):
    """Redis keeps server time, so this one runs without the time-passing rules."""
