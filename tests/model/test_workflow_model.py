"""Model-based test of workflow advancement: completions, failures, redeliveries and crashes in
any order, against a plain model of the rules.

One workflow, ``chain(s0, group(s1 [error callback e2], s3), s4)``, compiled to steps 0..4 (the
error callback is compiled right after the step it watches). Hypothesis claims steps' tasks,
settles them (success or failure, with live or stale leases; a success may ask for an eager
continuation, and the step it is handed is then held as if claimed), crashes workers (the
clock jumps past every lease and recovery runs), and re-runs archived steps, on a real broker
with a clock it can move (memory, an SQLite file). After every step the broker's workflow must
match the model: each step's state, the workflow's state, and which tasks exist; and no step's
task is ever enqueued twice while the one before is live (the chord body s4 in particular).
On SQLite a second workflow, ``chord([m0 (error callback e1), m2, m3], body 4)``, runs the same
rules: there a member's success may also be handed a member waiting to be claimed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conveyor import StepState, WorkflowState, chain, chord, group, signature
from conveyor.brokers.protocol import Broker
from conveyor.brokers.workflows import Continuation, StepOutcome, WorkflowBroker
from conveyor.errors import LeaseLostError
from conveyor.message import Lease, Task, TaskMessage, TaskState
from conveyor.options import MessageTemplate, TaskOptions
from conveyor.workflows.compile import compile_workflow
from model import redis_broker

T = TypeVar("T")
QUEUE = "default"
MAX_RETRY = 1
DEPS = {0: set(), 1: {0}, 3: {0}, 4: {1, 3}}  # main steps and what each waits for
ERRBACK = {1: 2}  # step 1's error callback is step 2
MAIN = (0, 1, 3, 4)


def _build(task: Task, options: TaskOptions) -> TaskMessage:
    return MessageTemplate.from_options(options).build(task, 1 << 20)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class WorkflowModel(RuleBasedStateMachine):
    movable_clock = True  # Redis keeps server time: no crash rule there
    # The workflow: what each main step waits for, the error callbacks, the main steps.
    deps: dict[int, set[int]] = DEPS
    errback: dict[int, int] = ERRBACK
    main: tuple[int, ...] = MAIN
    # Whether a member's success may be handed a waiting member (SQLite's eager continuation
    # to the next member of a chord or group).
    hands_over_members = False

    def canvas(self) -> Any:
        s = signature("step", max_retry=MAX_RETRY)
        err = signature("err", immutable=True, max_retry=MAX_RETRY)
        return chain(s, group(s.link_error(err), s), s)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.cleanup: list[Callable[[], None]] = []
        self.broker = self.open()
        store = self.broker
        assert isinstance(store, WorkflowBroker)
        self.store = store
        new = compile_workflow(self.canvas(), _build, retention_s=3600)
        self.run(self.store.create_workflow(new))
        self.workflow_id = new.id
        self.ids = [m["id"] for m in json.loads(new.graph)["steps"]]
        # the model: per step 'w' waiting, 'q' task waiting, 'a' active, 's', 'f'; a failed
        # step re-run by the inspector stays failed in its workflow until it succeeds: 'r'
        # (its task waiting) and 'R' (active)
        self.state = {i: "w" for i in range(5)}
        for i in self.main:
            if not self.deps[i]:
                self.state[i] = "q"
        self.retried = dict.fromkeys(range(5), 0)
        self.token: dict[int, int] = {}
        self.wf = WorkflowState.PENDING
        self.leases: list[Lease] = []

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

    # -- the model's rules ---------------------------------------------------------------------

    def _enqueue_ready(self) -> None:
        for j in self.main:
            if self.state[j] == "w" and all(self.state[d] == "s" for d in self.deps[j]):
                self.state[j] = "q"

    def _succeeded(self, i: int) -> None:
        was_failed = self.state[i] == "R"
        self.state[i] = "s"
        if i not in self.main:
            return
        if self.wf is WorkflowState.FAILED and was_failed:
            # A step re-run but not yet succeeded ("r", "R") is still failed in its workflow.
            if not any(self.state[j] in "frR" for j in self.main):
                self.wf = WorkflowState.RUNNING
        elif self.wf is WorkflowState.PENDING:
            self.wf = WorkflowState.RUNNING
        if self.wf is WorkflowState.RUNNING:
            self._enqueue_ready()
            if all(self.state[j] == "s" for j in self.main):
                self.wf = WorkflowState.SUCCEEDED

    def _failed(self, i: int) -> None:
        self.state[i] = "f"
        if i in self.main and self.wf in (WorkflowState.PENDING, WorkflowState.RUNNING):
            self.wf = WorkflowState.FAILED
        cb = self.errback.get(i)
        if cb is not None and self.state[cb] == "w":
            self.state[cb] = "q"

    def _index(self, lease: Lease) -> int:
        return self.ids.index(lease.task.id)

    # -- rules ---------------------------------------------------------------------------------

    @rule()
    def claim(self) -> None:
        leases = self.run(self.broker.claim([QUEUE], limit=1, lease_s=30))
        if not any(v in "qr" for v in self.state.values()):
            assert leases == []
            return
        assert len(leases) == 1
        i = self._index(leases[0])
        assert self.state[i] in "qr", (i, self.state)
        self.state[i] = "a" if self.state[i] == "q" else "R"
        self.token[i] = leases[0].token
        self.leases.append(leases[0])

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), success=st.booleans(), eager=st.booleans())
    def settle(self, data: st.DataObject, success: bool, eager: bool) -> None:
        lease = data.draw(st.sampled_from(self.leases))
        i = self._index(lease)
        live = self.state[i] in "aR" and self.token.get(i) == lease.token
        ask = frozenset({QUEUE}) if eager else frozenset()
        outcome = (
            StepOutcome(succeeded=True, result=b"1", continue_on=ask, continue_lease_s=30)
            if success
            else StepOutcome(succeeded=False, error="boom")
        )
        waiting: set[int] = set()  # steps whose tasks were waiting before this settle
        settled = self.run(self.store.settle_step(lease, outcome))
        assert bool(settled) is live
        assert not isinstance(settled, Continuation) or (eager and success)
        if live:
            if success:
                waiting = {j for j, v in self.state.items() if v == "q"}
                self._succeeded(i)
            else:
                self.retried[i] += 1
                self._failed(i)
        if isinstance(settled, Continuation):
            # Leased as a claim would: one of the steps this success made ready, or a member
            # waiting to be claimed (it takes no input), now active.
            j = self._index(settled.lease)
            assert self.state[j] == "q", (j, self.state)
            member = self.hands_over_members and j in self.main and not self.deps[j]
            assert j not in waiting or member, (j, self.state)
            assert settled.parent_result in (b"1", None)
            assert settled.parent_result is None or j not in waiting
            self.state[j] = "a"
            self.token[j] = settled.lease.token
            self.leases.append(settled.lease)

    @precondition(lambda self: any(v in "aR" for v in self.state.values()))
    @rule()
    def retry(self) -> None:
        i = next(i for i, v in self.state.items() if v in "aR")
        lease = next(le for le in self.leases if self._index(le) == i and le.token == self.token[i])
        self.run(self.broker.retry(lease, error="again", delay_s=0))
        self.retried[i] += 1
        self.state[i] = "q" if self.state[i] == "a" else "r"

    @precondition(lambda self: self.movable_clock)
    @rule()
    def crash(self) -> None:
        """Every worker dies: the clock passes every lease and recovery runs."""
        self.clock.now += 60
        self.run(self.broker.recover_expired(delay_s=0))
        for i, v in list(self.state.items()):
            if v in "aR":
                self.retried[i] += 1
                if self.retried[i] > MAX_RETRY:
                    self._failed(i)
                else:
                    self.state[i] = "q" if v == "a" else "r"

    @precondition(lambda self: any(v == "f" for v in self.state.values()))
    @rule(data=st.data())
    def rerun(self, data: st.DataObject) -> None:
        i = data.draw(st.sampled_from([i for i, v in self.state.items() if v == "f"]))
        self.run(self.broker.run_task(QUEUE, self.ids[i]))
        self.state[i] = "r"
        self.retried[i] = self.run(self.broker.get_task(QUEUE, self.ids[i])).retried

    @rule(data=st.data())
    def stale_settle(self, data: st.DataObject) -> None:
        """A settle with a lease token nobody holds changes nothing."""
        if not self.leases:
            return
        lease = data.draw(st.sampled_from(self.leases))
        ghost = replace(lease, token=lease.token + 10_000)
        assert self.run(self.store.settle_step(ghost, StepOutcome(succeeded=True))) is False
        try:
            self.run(self.broker.retry(ghost, error="x", delay_s=0))
        except LeaseLostError:
            pass
        else:
            raise AssertionError("a stale retry was accepted")

    # -- checks --------------------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        rec = self.run(self.store.load_workflow(self.workflow_id))
        expect = {
            "w": StepState.WAITING,
            "q": StepState.ENQUEUED,
            "a": StepState.ENQUEUED,
            "s": StepState.SUCCEEDED,
            "f": StepState.FAILED,
            "r": StepState.FAILED,
            "R": StepState.FAILED,
        }
        assert [s.state for s in rec.steps] == [expect[self.state[i]] for i in range(5)]
        assert rec.state is self.wf
        live = {
            t.id
            for state in (TaskState.PENDING, TaskState.RETRY, TaskState.ACTIVE)
            for t in self.run(self.broker.list_tasks(QUEUE, state))
        }
        assert live == {self.ids[i] for i, v in self.state.items() if v in "qarR"}


class MemoryWorkflowModel(WorkflowModel):
    def open(self) -> Broker:
        from conveyor.brokers.memory import MemoryBroker

        return MemoryBroker(clock=self.clock)


class SqliteWorkflowModel(WorkflowModel):
    hands_over_members = True

    def open(self) -> Broker:
        return open_sqlite(self.clock, self.cleanup)


def open_sqlite(clock: Clock, cleanup: list[Callable[[], None]]) -> Broker:
    from conveyor.brokers.sqlite import SqliteBroker

    folder = Path(tempfile.mkdtemp(prefix="conveyor-wf-model-"))
    cleanup.append(lambda: shutil.rmtree(folder, ignore_errors=True))
    return SqliteBroker(folder / "broker.db", clock=clock)


class SqliteChordModel(WorkflowModel):
    """``chord([m0 (error callback e1), m2, m3], body 4)``: a member's success may be handed the
    next waiting member (SQLite), even as members fail, are retried, re-run or crash."""

    hands_over_members = True
    deps = {0: set(), 2: set(), 3: set(), 4: {0, 2, 3}}
    errback = {0: 1}
    main = (0, 2, 3, 4)

    def canvas(self) -> Any:
        s = signature("step", max_retry=MAX_RETRY)
        err = signature("err", immutable=True, max_retry=MAX_RETRY)
        return chord([s.link_error(err), s, s], s)

    def open(self) -> Broker:
        return open_sqlite(self.clock, self.cleanup)


class RedisWorkflowModel(WorkflowModel):
    """Redis decides a step's success in its own script (wf_advance.lua): the same model."""

    movable_clock = False

    def open(self) -> Broker:
        return redis_broker("conveyor-wf-model", self.cleanup)


SETTINGS = settings(
    max_examples=int(os.environ.get("CONVEYOR_WF_MODEL_EXAMPLES", "60")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TestMemoryWorkflowModel = SETTINGS(MemoryWorkflowModel).TestCase
TestSqliteWorkflowModel = SETTINGS(SqliteWorkflowModel).TestCase
TestSqliteChordModel = SETTINGS(SqliteChordModel).TestCase


@pytest.mark.usefixtures("_redis_up")
class TestRedisWorkflowModel(SETTINGS(RedisWorkflowModel).TestCase):
    """Redis keeps server time, so this one runs without the crash rule."""
