"""Eager continuation to a sibling: a chord member's settlement may lease the next pending member
of its workflow to the worker settling it, in the same atomic step, as a claim would.

A backend may always decline (and return ``True``); SQLite does it. Whatever it hands over is a
real lease of a member that takes no input (ACTIVE, fenced, recovered when it lapses), the
queue's next task in the claim's order, never the body, never a member of another workflow,
never over a paused or limited queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conformance.test_leases import SHORT_LEASE_S, recover
from conformance.test_workflow_continuation import (
    _pause,
    _queue_concurrency,
    _rate,
    _type_concurrency,
    make_app,
    success,
)
from conveyor import App, WorkflowState, chord, group
from conveyor.brokers.protocol import Broker
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.brokers.workflows import Continuation, StepOutcome, step_task_id
from conveyor.message import Lease, TaskState
from conveyor.worker.server import Server
from conveyor.workflows.running import workflows_of
from worker.harness import fast, serving

pytestmark = pytest.mark.parametrize(
    "broker", ["memory", "sqlite", "redis", "redis-acl"], indirect=True
)


def sibling(broker: Broker, settled: bool | Continuation) -> Continuation | None:
    """The member handed over by a settlement; SQLite must hand one over."""
    assert settled is not False
    if isinstance(broker, SqliteBroker):
        assert isinstance(settled, Continuation)
    return settled if isinstance(settled, Continuation) else None


def three_members(app: App) -> Any:
    add = app.tasks["add"]
    return chord([add.s(i, 1) for i in range(3)], app.tasks["fixed"].s())


async def first_member(broker: Broker, canvas: Any = three_members) -> tuple[App, str, Lease]:
    app = make_app(broker)
    info = await app.aenqueue_workflow(canvas(app))
    [lease] = await broker.claim(["default"], limit=1, lease_s=30)
    assert lease.task.id == step_task_id(info.id, 0)
    return app, info.id, lease


async def test_a_member_settlement_hands_over_the_next_member(broker: Broker) -> None:
    _, wid, lease = await first_member(broker)
    store = workflows_of(broker)
    held = [lease]
    for i in (1, 2):
        continued = sibling(broker, await store.settle_step(held[-1], success(b"1")))
        if continued is None:
            [claimed] = await broker.claim(["default"], limit=1, lease_s=30)
            held.append(claimed)
            continue
        assert continued.lease.task.id == step_task_id(wid, i)
        assert continued.parent_result is None
        # A real lease: ACTIVE for the inspector, so no claim hands it out again.
        task = await broker.get_task("default", continued.lease.task.id)
        assert task.state is TaskState.ACTIVE
        pending = await broker.list_tasks("default", TaskState.PENDING)
        assert [t.id for t in pending] == [step_task_id(wid, j) for j in range(i + 1, 3)]
        assert await broker.extend_leases([continued.lease], 30) == [True]
        held.append(continued.lease)
    # The last member made the body ready: it takes the members' results, so it is claimed.
    assert await store.settle_step(held[-1], success(b"1")) is True
    [body] = await broker.claim(["default"], limit=5, lease_s=30)
    assert body.task.id == step_task_id(wid, 3)
    assert await store.settle_step(body, StepOutcome(succeeded=True, result=b"3"))
    rec = await store.load_workflow(wid)
    assert rec.state is WorkflowState.SUCCEEDED
    assert [s.decoded_result() for s in rec.steps] == [1, 1, 1, 3]


async def test_members_settled_together_each_get_their_own(broker: Broker) -> None:
    app = make_app(broker)
    add = app.tasks["add"]
    info = await app.aenqueue_workflow(group([add.s(i, 1) for i in range(5)]))
    leases = await broker.claim(["default"], limit=2, lease_s=30)
    store = workflows_of(broker)
    settled = await asyncio.gather(*(store.settle_step(le, success(b"1")) for le in leases))
    handed = [c for s in settled if (c := sibling(broker, s)) is not None]
    ids = sorted(c.lease.task.id for c in handed)
    assert ids == sorted({c.lease.task.id for c in handed})  # never the same member twice
    assert set(ids) <= {step_task_id(info.id, i) for i in (2, 3)}
    tokens = {c.lease.token for c in handed} | {le.token for le in leases}
    assert len(tokens) == len(handed) + 2


async def test_a_member_of_another_workflow_is_left_to_the_claim(broker: Broker) -> None:
    app = make_app(broker)
    add = app.tasks["add"]
    first = await app.aenqueue_workflow(chord([add.s(1, 1)], app.tasks["fixed"].s()))
    other = await app.aenqueue_workflow(three_members(app))
    [lease] = await broker.claim(["default"], limit=1, lease_s=30)
    assert lease.task.id == step_task_id(first.id, 0)
    # The queue's next task is the other chord's member: not this workflow's to hand over.
    assert await workflows_of(broker).settle_step(lease, success(b"1")) is True
    leases = await broker.claim(["default"], limit=5, lease_s=30)
    assert {le.task.id for le in leases} == {
        step_task_id(first.id, 1),
        *(step_task_id(other.id, i) for i in range(3)),
    }


@pytest.mark.parametrize(
    "refuse",
    [_pause, _rate, _type_concurrency, _queue_concurrency],
    ids=["paused", "rate", "type-concurrency", "queue-concurrency"],
)
async def test_a_paused_or_limited_queue_leaves_the_members_to_the_claim(
    broker: Broker, refuse: Callable[[Broker], Awaitable[None]]
) -> None:
    _, wid, lease = await first_member(broker)
    await refuse(broker)
    assert await workflows_of(broker).settle_step(lease, success(b"1")) is True
    assert (await broker.get_task("default", step_task_id(wid, 1))).state is TaskState.PENDING


async def test_nothing_is_handed_over_unless_asked_or_on_another_queue(broker: Broker) -> None:
    _, wid, lease = await first_member(broker)
    store = workflows_of(broker)
    assert await store.settle_step(lease, StepOutcome(succeeded=True, result=b"1")) is True
    [nxt] = await broker.claim(["default"], limit=1, lease_s=30)
    elsewhere = StepOutcome(
        succeeded=True, result=b"1", continue_on=frozenset({"other"}), continue_lease_s=30
    )
    assert await store.settle_step(nxt, elsewhere) is True
    assert (await broker.get_task("default", step_task_id(wid, 2))).state is TaskState.PENDING


async def test_a_handed_over_member_whose_lease_lapses_is_recovered(broker: Broker) -> None:
    _, wid, lease = await first_member(broker)
    store = workflows_of(broker)
    settled = await store.settle_step(lease, success(b"1", lease_s=SHORT_LEASE_S))
    continued = sibling(broker, settled)
    if continued is None:
        return
    # Its worker died after the settlement: the lease lapses, recovery puts the member back.
    assert await recover(broker) == 1
    claimed = {le.task.id: le for le in await broker.claim(["default"], limit=5, lease_s=30)}
    assert set(claimed) == {step_task_id(wid, 1), step_task_id(wid, 2)}
    again = claimed[continued.lease.task.id]
    assert again.token != continued.lease.token
    assert await store.settle_step(continued.lease, success(b"1")) is False
    assert await store.settle_step(again, StepOutcome(succeeded=True, result=b"1")) is True
    rec = await store.load_workflow(wid)
    assert [s.state.value for s in rec.steps[:3]] == ["succeeded", "succeeded", "enqueued"]


async def test_a_cancelled_workflow_hands_over_nothing(broker: Broker) -> None:
    _, wid, lease = await first_member(broker)
    store = workflows_of(broker)
    assert await store.cancel_workflow(wid)
    assert await store.settle_step(lease, success(b"1")) is True


async def test_a_worker_runs_a_chord_by_continuation(broker: Broker) -> None:
    app = make_app(broker)
    add = app.tasks["add"]
    server = Server(broker, **fast(concurrency=2))
    async with serving(server, app.mux):
        canvas = chord([add.s(i, 1) for i in range(20)], app.tasks["fixed"].s())
        info = await app.aenqueue_workflow(canvas)
        assert await app.async_client.wait(info, 20) == list(range(1, 21))
    if isinstance(broker, SqliteBroker):
        assert server.stats.continued > 0
