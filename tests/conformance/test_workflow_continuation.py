"""Eager continuation on every broker: a chain step's settlement leases the next step to the
worker settling it, in the same atomic step, only when a claim would have handed it over.

The continued step is a real lease (ACTIVE, fenced, seen by the inspector, recovered when it
lapses); a paused queue, a rate or concurrency limit, another queue or a delay enqueue the step
as usual instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conformance.test_leases import SHORT_LEASE_S, recover
from conveyor import App, WorkflowState, chain, chord
from conveyor.brokers.limits import FlowControl, Rate
from conveyor.brokers.protocol import Broker
from conveyor.brokers.workflows import Continuation, StepOutcome, WorkflowBroker, step_task_id
from conveyor.message import Lease, TaskState
from conveyor.worker.server import Server
from conveyor.workflows.running import workflows_of
from worker.harness import fast, serving

pytestmark = pytest.mark.parametrize(
    "broker", ["memory", "sqlite", "redis", "redis-acl"], indirect=True
)

MINE = frozenset({"default"})


def make_app(broker: Broker) -> App:
    app = App(broker)

    @app.task(name="add", max_retry=3)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="fixed", max_retry=3)
    def fixed(a: int) -> int:
        return a

    return app


def success(result: bytes, *, lease_s: float = 30.0) -> StepOutcome:
    return StepOutcome(succeeded=True, result=result, continue_on=MINE, continue_lease_s=lease_s)


async def first_step(broker: Broker, canvas: Any) -> tuple[App, str, Lease]:
    """Enqueue ``canvas`` and claim its first step: (app, workflow id, its lease)."""
    app = make_app(broker)
    info = await app.aenqueue_workflow(canvas(app))
    [lease] = await broker.claim(["default"], limit=5, lease_s=30)
    assert lease.task.id == step_task_id(info.id, 0)
    return app, info.id, lease


def two_adds(app: App) -> Any:
    add = app.tasks["add"]
    return chain(add.s(1, 1), add.s(2))


async def test_the_next_step_comes_back_leased_with_its_input(broker: Broker) -> None:
    _, wid, lease = await first_step(broker, two_adds)
    store: WorkflowBroker = workflows_of(broker)
    continued = await store.settle_step(lease, success(b"2"))

    assert isinstance(continued, Continuation)
    assert continued.lease.task.id == step_task_id(wid, 1)
    assert (continued.parent_result, continued.prepend) == (b"2", True)
    # A real lease: ACTIVE for the inspector, and no claim hands it out again.
    task = await broker.get_task("default", continued.lease.task.id)
    assert task.state is TaskState.ACTIVE
    assert (await broker.queue_stats("default")).active == 1
    [listed] = await broker.list_tasks("default", TaskState.ACTIVE)
    assert listed.id == continued.lease.task.id
    assert await broker.claim(["default"], limit=5, lease_s=30) == []
    assert await broker.extend_leases([continued.lease], 30) == [True]
    assert await store.settle_step(continued.lease, StepOutcome(succeeded=True, result=b"4"))
    rec = await store.load_workflow(wid)
    assert rec.state is WorkflowState.SUCCEEDED
    assert [s.decoded_result() for s in rec.steps] == [2, 4]


async def test_the_continued_lease_describes_the_task_as_stored(broker: Broker) -> None:
    def with_options(app: App) -> Any:
        add = app.tasks["add"]
        later = datetime.now(UTC) + timedelta(hours=1)
        return chain(add.s(1, 1), add.s(2).options(timeout=7.5, deadline=later, max_retry=4))

    _, _, lease = await first_step(broker, with_options)
    continued = await workflows_of(broker).settle_step(lease, success(b"2"))
    assert isinstance(continued, Continuation)
    info = continued.lease.task
    stored = await broker.get_task("default", info.id)
    assert info.state is stored.state is TaskState.ACTIVE
    fields = (
        *("id", "queue", "type", "raw_payload", "encoding", "max_retry", "retried"),
        *("last_error", "timeout", "deadline", "next_process_at", "retention", "unique_key"),
        "raw_headers",
    )
    assert {f: getattr(info, f) for f in fields} == {f: getattr(stored, f) for f in fields}
    assert info.timeout == timedelta(seconds=7.5) and info.max_retry == 4
    assert stored.enqueued_at is not None and info.enqueued_at is not None
    assert abs((info.enqueued_at - stored.enqueued_at).total_seconds()) < 1e-3


async def test_an_immutable_step_continues_without_input(broker: Broker) -> None:
    def canvas(app: App) -> Any:
        return chain(app.tasks["add"].s(1, 1), app.tasks["fixed"].si(7))

    _, _, lease = await first_step(broker, canvas)
    continued = await workflows_of(broker).settle_step(lease, success(b"2"))
    assert isinstance(continued, Continuation)
    assert continued.parent_result is None


async def test_nothing_continues_unless_asked(broker: Broker) -> None:
    _, wid, lease = await first_step(broker, two_adds)
    settled = await workflows_of(broker).settle_step(
        lease, StepOutcome(succeeded=True, result=b"2")
    )
    assert settled is True
    [nxt] = await broker.claim(["default"], limit=5, lease_s=30)
    assert nxt.task.id == step_task_id(wid, 1)


def _pause(broker: Broker) -> Awaitable[None]:
    return broker.pause_queue("default")


def _rate(broker: Broker) -> Awaitable[None]:
    assert isinstance(broker, FlowControl)
    return broker.set_rate_limit("add", Rate(count=100, period_s=1.0))


def _type_concurrency(broker: Broker) -> Awaitable[None]:
    assert isinstance(broker, FlowControl)
    return broker.set_task_concurrency("add", 10)


def _queue_concurrency(broker: Broker) -> Awaitable[None]:
    assert isinstance(broker, FlowControl)
    return broker.set_queue_concurrency("default", 10)


@pytest.mark.parametrize(
    "refuse",
    [_pause, _rate, _type_concurrency, _queue_concurrency],
    ids=["paused", "rate", "type-concurrency", "queue-concurrency"],
)
async def test_a_paused_or_limited_queue_gets_the_step_enqueued(
    broker: Broker, refuse: Callable[[Broker], Awaitable[None]]
) -> None:
    _, wid, lease = await first_step(broker, two_adds)
    await refuse(broker)
    settled = await workflows_of(broker).settle_step(lease, success(b"2"))

    assert settled is True
    task = await broker.get_task("default", step_task_id(wid, 1))
    assert task.state is TaskState.PENDING
    await broker.unpause_queue("default")
    [nxt] = await broker.claim(["default"], limit=5, lease_s=30)
    assert nxt.task.id == step_task_id(wid, 1)


async def test_a_step_on_another_queue_is_enqueued_there(broker: Broker) -> None:
    def canvas(app: App) -> Any:
        add = app.tasks["add"]
        return chain(add.s(1, 1), add.s(2).options(queue="elsewhere"))

    _, wid, lease = await first_step(broker, canvas)
    assert await workflows_of(broker).settle_step(lease, success(b"2")) is True
    task = await broker.get_task("elsewhere", step_task_id(wid, 1))
    assert task.state is TaskState.PENDING


async def test_a_delayed_step_is_scheduled_not_continued(broker: Broker) -> None:
    def canvas(app: App) -> Any:
        add = app.tasks["add"]
        return chain(add.s(1, 1), add.s(2).options(process_in=timedelta(hours=1)))

    _, wid, lease = await first_step(broker, canvas)
    assert await workflows_of(broker).settle_step(lease, success(b"2")) is True
    task = await broker.get_task("default", step_task_id(wid, 1))
    assert task.state is TaskState.SCHEDULED


async def test_a_continued_step_whose_lease_lapses_is_recovered_and_redelivered(
    broker: Broker,
) -> None:
    _, wid, lease = await first_step(broker, two_adds)
    store = workflows_of(broker)
    continued = await store.settle_step(lease, success(b"2", lease_s=SHORT_LEASE_S))
    assert isinstance(continued, Continuation)

    # Its worker died after the settlement: the lease lapses, recovery puts the step back.
    assert await recover(broker) == 1
    [again] = await broker.claim(["default"], limit=5, lease_s=30)
    assert again.task.id == continued.lease.task.id
    assert again.token != continued.lease.token
    # Fencing: the dead worker's lease settles nothing, the first step's stale lease neither.
    assert await store.settle_step(continued.lease, success(b"4")) is False
    assert await store.settle_step(lease, success(b"2")) is False
    assert await store.settle_step(again, StepOutcome(succeeded=True, result=b"4")) is True
    rec = await store.load_workflow(wid)
    assert rec.state is WorkflowState.SUCCEEDED
    assert [s.decoded_result() for s in rec.steps] == [2, 4]


async def test_a_worker_runs_a_chain_by_continuation(broker: Broker) -> None:
    app = make_app(broker)
    add = app.tasks["add"]
    server = Server(broker, **fast(concurrency=2))
    async with serving(server, app.mux):
        info = await app.aenqueue_workflow(chain(add.s(0, 1), *(add.s(1) for _ in range(9))))
        assert await app.async_client.wait(info, 20) == 10
    # Every step after the first was handed over by its parent's settlement.
    assert server.stats.continued == 9


async def test_settlements_made_together_each_get_their_own_outcome(broker: Broker) -> None:
    """Steps settled at the same time (a worker's slots finishing together; on Redis sent as
    one round trip) are each settled on their own: a stale lease refuses its step only, a
    chain step gets its continuation, a failure fails its own workflow only."""
    app = make_app(broker)
    add = app.tasks["add"]
    members = await app.aenqueue_workflow(
        chord([add.s(i, 1) for i in range(4)], app.tasks["fixed"].s())
    )
    pair = await app.aenqueue_workflow(chain(add.s(1, 1), add.s(2)))
    failing = await app.aenqueue_workflow(chain(add.s(5, 5), add.s(3)))
    leases = {le.task.id: le for le in await broker.claim(["default"], limit=10, lease_s=30)}
    assert len(leases) == 6
    chord_leases = [leases[step_task_id(members.id, i)] for i in range(4)]
    stale = replace(chord_leases[2], token=chord_leases[2].token + 1000)
    store = workflows_of(broker)
    outcomes = await asyncio.gather(
        *(store.settle_step(le, success(b"1")) for le in chord_leases[:2]),
        store.settle_step(stale, success(b"1")),
        store.settle_step(chord_leases[3], success(b"1")),
        store.settle_step(leases[step_task_id(pair.id, 0)], success(b"2")),
        store.settle_step(
            leases[step_task_id(failing.id, 0)], StepOutcome(succeeded=False, error="boom")
        ),
    )

    assert outcomes[:4] == [True, True, False, True]
    continued = outcomes[4]
    assert isinstance(continued, Continuation)
    assert continued.lease.task.id == step_task_id(pair.id, 1)
    assert continued.parent_result == b"2"
    assert outcomes[5] is True
    assert (await store.load_workflow(failing.id)).state is WorkflowState.FAILED
    # The refused member is still held under its real lease; settling it readies the body.
    assert (await broker.get_task("default", stale.task.id)).state is TaskState.ACTIVE
    assert await broker.claim(["default"], limit=10, lease_s=30) == []
    assert await store.settle_step(chord_leases[2], success(b"1")) is True
    [body] = await broker.claim(["default"], limit=10, lease_s=30)
    assert body.task.id == step_task_id(members.id, 4)
    assert await store.settle_step(body, StepOutcome(succeeded=True, result=b"[1,1,1,1]"))
    assert await store.settle_step(continued.lease, StepOutcome(succeeded=True, result=b"4"))
    for info in (members, pair):
        assert (await store.load_workflow(info.id)).state is WorkflowState.SUCCEEDED
