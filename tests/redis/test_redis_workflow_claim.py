"""Redis (standalone, Sentinel): a claimed workflow step gets its workflow's record with its
claim, so a step that reads nothing else before it runs (a chord's member) needs no read of its
own; a step with an input, or whose workflow changed since its claim read it, still reads what
it needs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis_servers import Fleet, namespaced_broker, need_binaries, sentinel, server

from conveyor import App, WorkflowState, chord
from conveyor.brokers.redis import RedisBroker
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


async def test_a_chord_through_a_sentinel(tmp_path: Path) -> None:
    need_binaries("redis-sentinel")
    with Fleet() as fleet:
        primary = fleet.add(server(tmp_path / "primary"))
        watcher = fleet.add(sentinel(tmp_path / "sentinel", primary.port, quorum=1))
        url = f"redis+sentinel://127.0.0.1:{watcher.port}/mymaster/0?namespace=wf-sentinel"
        broker = RedisBroker.from_url(url)
        try:
            app = App(broker)

            @app.task(name="add", max_retry=0)
            def add(a: int, b: int) -> int:
                return a + b

            info = await app.aenqueue_workflow(chord([add.s(i, 1) for i in range(4)], add.s(0)))
            leases = await broker.claim(["default"], limit=10, lease_s=30)
            assert len(leases) == 4
            for lease in leases:
                rec = await broker.load_step(info.id, _step(lease))
                assert rec.steps[_step(lease)].state is StepState.ENQUEUED
            done = StepOutcome(succeeded=True, result=b"1")
            settled = await asyncio.gather(*(broker.settle_step(le, done) for le in leases))
            assert settled == [True] * 4
            [body] = await broker.claim(["default"], limit=10, lease_s=30)
            assert await broker.settle_step(body, StepOutcome(succeeded=True, result=b"4"))
            assert (await broker.load_workflow(info.id)).state is WorkflowState.SUCCEEDED
        finally:
            await broker.close()
