"""SQLite's batched settlements: applied together, each still all or nothing on its own.

The batch is handed to the database thread in one call here (as the settlement combiner does
with settlements that arrive together), so what shares a transaction is deterministic.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from conveyor import App, WorkflowState, chain, chord
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.brokers.sqlite.workflow_settle import Settled, settle_many
from conveyor.brokers.workflows import Continuation, StepOutcome, StepState, step_task_id
from conveyor.errors import TaskIdConflictError
from conveyor.message import Lease, TaskMessage, TaskState
from support import eventually

ASK = frozenset({"default"})


def success(result: bytes = b"1", *, ask: bool = False) -> StepOutcome:
    return StepOutcome(
        succeeded=True, result=result, continue_on=ASK if ask else frozenset(), continue_lease_s=30
    )


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[SqliteBroker]:
    b = SqliteBroker(tmp_path / "broker.db")
    yield b
    await b.close()


def make_app(broker: SqliteBroker) -> App:
    app = App(broker)

    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="total")
    def total(values: list[int]) -> int:
        return sum(values)

    return app


async def settle(broker: SqliteBroker, items: Sequence[tuple[Lease, StepOutcome]]) -> list[Settled]:
    return await broker._run(lambda s: settle_many(s, items))


async def claim_all(broker: SqliteBroker, limit: int = 50) -> dict[str, Lease]:
    return {le.task.id: le for le in await broker.claim(["default"], limit=limit, lease_s=30)}


def members(app: App, n: int) -> Any:
    add = app.tasks["add"]
    return chord([add.s(i, 1) for i in range(n)], app.tasks["total"].s())


async def test_members_settled_together_advance_their_workflow_once_each(
    broker: SqliteBroker,
) -> None:
    app = make_app(broker)
    info = await app.aenqueue_workflow(members(app, 3))
    leases = await claim_all(broker)
    ids = [step_task_id(info.id, i) for i in range(3)]
    assert await settle(broker, [(leases[i], success()) for i in ids]) == [True] * 3
    rec = await broker.load_workflow(info.id)
    assert rec.state is WorkflowState.RUNNING
    assert rec.version == 3  # one change per member, written in one update
    assert [s.state for s in rec.steps] == [StepState.SUCCEEDED] * 3 + [StepState.ENQUEUED]
    [body] = await broker.claim(["default"], limit=5, lease_s=30)
    assert await settle(broker, [(body, success(b"3"))]) == [True]
    rec = await broker.load_workflow(info.id)
    assert (rec.state, rec.version) == (WorkflowState.SUCCEEDED, 4)
    assert rec.finished_at is not None


async def test_a_refused_settlement_leaves_the_others_of_its_batch_applied(
    broker: SqliteBroker,
) -> None:
    app = make_app(broker)
    add = app.tasks["add"]
    pair = await app.aenqueue_workflow(chain(add.s(1, 1), add.s(2)))
    taken = step_task_id(pair.id, 1)  # the chain's next step's id, taken by another task
    await broker.enqueue([TaskMessage(id=taken, type="other", payload=b"null")])
    group = await app.aenqueue_workflow(members(app, 2))
    leases = await claim_all(broker)
    first, member = leases[step_task_id(pair.id, 0)], leases[step_task_id(group.id, 0)]

    refused, applied = await settle(broker, [(first, success(b"2")), (member, success())])

    assert isinstance(refused, TaskIdConflictError)
    assert applied is True
    # The refused step is untouched: still held under its lease, its workflow not advanced.
    assert (await broker.get_task("default", first.task.id)).state is TaskState.ACTIVE
    rec = await broker.load_workflow(pair.id)
    assert (rec.state, rec.steps[0].state) == (WorkflowState.PENDING, StepState.ENQUEUED)
    rec = await broker.load_workflow(group.id)
    assert (rec.state, rec.steps[0].state) == (WorkflowState.RUNNING, StepState.SUCCEEDED)
    assert rec.version == 1


async def test_members_settled_together_are_handed_the_next_members_in_order(
    broker: SqliteBroker,
) -> None:
    app = make_app(broker)
    info = await app.aenqueue_workflow(members(app, 5))
    leases = list((await claim_all(broker, 2)).values())
    outcomes = await settle(broker, [(le, success(ask=True)) for le in leases])
    assert all(isinstance(o, Continuation) for o in outcomes)
    handed = [o.lease for o in outcomes if isinstance(o, Continuation)]
    assert [le.task.id for le in handed] == [step_task_id(info.id, i) for i in (2, 3)]
    assert handed[0].token + 1 == handed[1].token  # minted together
    [last] = await broker.claim(["default"], limit=5, lease_s=30)
    assert last.task.id == step_task_id(info.id, 4)


async def test_a_task_due_before_the_next_member_is_left_to_the_claim(
    broker: SqliteBroker,
) -> None:
    app = make_app(broker)
    await broker.enqueue([TaskMessage(id="late", type="other", payload=b"null")])
    info = await app.aenqueue_workflow(members(app, 3))
    leases = await claim_all(broker, 2)
    await broker.retry(leases["late"], error="again", delay_s=3600)
    lease = leases[step_task_id(info.id, 0)]

    def came_due_long_ago(store: Any) -> None:
        with store.write():
            store.conn.execute("UPDATE tasks SET ready_at = 0 WHERE id = 'late'")

    await broker._run(came_due_long_ago)
    # A claim would take the RETRY task that came due first: the member is not handed over.
    assert await settle(broker, [(lease, success(ask=True))]) == [True]
    claimed = await broker.claim(["default"], limit=1, lease_s=30)
    assert [le.task.id for le in claimed] == ["late"]


async def test_a_continued_chain_step_settles_at_once_unless_the_lock_is_held_elsewhere(
    broker: SqliteBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(broker)
    add = app.tasks["add"]
    info = await app.aenqueue_workflow(chain(add.s(1, 1), add.s(2), add.s(3)))
    [first] = await broker.claim(["default"], limit=5, lease_s=30)
    on_thread: list[object] = []
    run = broker._thread.run

    async def counted(fn: Any, **kwargs: Any) -> Any:
        on_thread.append(fn)
        return await run(fn, **kwargs)

    monkeypatch.setattr(broker._thread, "run", counted)
    settled = await broker.settle_step(first, success(b"2", ask=True))  # claimed: the thread's
    assert isinstance(settled, Continuation)
    assert settled.lease.task.id == step_task_id(info.id, 1)
    assert len(on_thread) == 1
    # Stored ACTIVE under the continuation's lease, as a claim would have left it.
    with sqlite3.connect(broker.path) as reader:
        row = reader.execute(
            "SELECT state, token, lease_expires_at, since FROM tasks WHERE id = ?",
            (settled.lease.task.id,),
        ).fetchone()
    assert row[:3] == ("active", settled.lease.token, settled.lease.expires_at)
    assert row[3] is not None
    # Another connection holds the write lock: the continued step waits on the database thread.
    holder = sqlite3.connect(broker.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    pending = asyncio.ensure_future(broker.settle_step(settled.lease, success(b"4", ask=True)))
    await eventually(lambda: asyncio.to_thread(lambda: len(on_thread) == 2))
    holder.execute("ROLLBACK")
    holder.close()
    last = await pending
    assert isinstance(last, Continuation)
    # The lock is free and the thread idle: settled in this thread, without a hand-off.
    assert await broker.settle_step(last.lease, success(b"7")) is True
    assert len(on_thread) == 2
    rec = await broker.load_workflow(info.id)
    assert rec.state is WorkflowState.SUCCEEDED


async def test_a_continued_chain_step_settled_at_once_gets_its_own_refusal(
    broker: SqliteBroker,
) -> None:
    app = make_app(broker)
    add = app.tasks["add"]
    info = await app.aenqueue_workflow(chain(add.s(1, 1), add.s(2), add.s(3)))
    [first] = await broker.claim(["default"], limit=5, lease_s=30)
    settled = await broker.settle_step(first, success(b"2", ask=True))
    assert isinstance(settled, Continuation)
    taken = step_task_id(info.id, 2)  # the next step's id, taken by another task
    await broker.enqueue([TaskMessage(id=taken, type="other", payload=b"null")])
    with pytest.raises(TaskIdConflictError):
        await broker.settle_step(settled.lease, success(b"4", ask=True))
    # Nothing of it was applied: the step is still held under its lease.
    assert (await broker.get_task("default", settled.lease.task.id)).state is TaskState.ACTIVE
    rec = await broker.load_workflow(info.id)
    assert rec.steps[1].state is StepState.ENQUEUED
