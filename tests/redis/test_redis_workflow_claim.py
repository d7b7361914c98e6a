"""Redis (standalone): a claimed workflow step gets its workflow's record with its claim, so a
step that reads nothing else before it runs (a chord's member) needs no read of its own; a step
with an input, or whose workflow changed since its claim read it, still reads what it needs."""

from __future__ import annotations

from typing import Any

import pytest
from redis_servers import namespaced_broker

from conveyor import App, chord
from conveyor.brokers.workflows import StepOutcome, StepState, parse_step_task_id
from conveyor.message import Lease

pytestmark = pytest.mark.redis


async def test_members_read_nothing_after_their_claim(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with namespaced_broker(redis_url) as broker:
        app = App(broker)

        @app.task(name="add", max_retry=0)
        def add(a: int, b: int) -> int:
            return a + b

        @app.task(name="total", max_retry=0)
        def total(values: list[int]) -> int:
            return sum(values)

        info = await app.aenqueue_workflow(chord([add.s(i, 1) for i in range(3)], total.s()))
        reads: list[int] = []
        read_many = broker._read_many

        async def counting(commands: list[tuple[Any, ...]]) -> list[Any]:
            reads.append(len(commands))
            replies: list[Any] = await read_many(commands)
            return replies

        monkeypatch.setattr(broker, "_read_many", counting)
        leases = await broker.claim(["default"], limit=10, lease_s=30)
        assert len(leases) == 3
        steps = [_step(le) for le in leases]

        # The first step of a workflow reads its graph; the others read nothing more.
        records = [await broker.load_step(info.id, i) for i in steps]
        assert len(reads) == 1
        assert all(
            r.steps[i].state is StepState.ENQUEUED for r, i in zip(records, steps, strict=True)
        )

        for lease in leases:
            assert await broker.settle_step(lease, StepOutcome(succeeded=True, result=b"1"))
        [body] = await broker.claim(["default"], limit=10, lease_s=30)
        # The body reads its inputs: its record from the claim is not enough.
        rec = await broker.load_step(info.id, _step(body))
        assert len(reads) == 2
        assert [rec.steps[i].result for i in steps] == [b"1", b"1", b"1"]


async def test_a_record_read_by_the_claim_is_used_once(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as broker:
        app = App(broker)

        @app.task(name="add", max_retry=0)
        def add(a: int, b: int) -> int:
            return a + b

        info = await app.aenqueue_workflow(chord([add.s(i, 1) for i in range(2)], add.s(0)))
        leases = await broker.claim(["default"], limit=10, lease_s=30)
        first = _step(leases[0])
        await broker.load_step(info.id, first)  # the graph is at hand from here on
        await broker.cancel_workflow(info.id)
        # Read again, not taken from the claim: the cancel shows.
        again = await broker.load_step(info.id, first)
        assert again.steps[first].state is StepState.CANCELLED


def _step(lease: Lease) -> int:
    step = parse_step_task_id(lease.task.id)
    assert step is not None
    return step[1]
