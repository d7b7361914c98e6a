"""Redis: the successes of workflow steps settled at the same time go to the server in one
round trip (one ``wf_advance.lua`` run per workflow, pipelined on the broker's kept
connection), and each caller gets its own outcome, an error included; a server that lost its
scripts gets them loaded again and the settlements sent once more."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from redis_servers import namespaced_broker, server

from conveyor import App, WorkflowState, chord
from conveyor.brokers.redis import keys
from conveyor.brokers.workflows import StepOutcome, step_task_id
from conveyor.errors import BrokerError

pytestmark = pytest.mark.redis

DONE = StepOutcome(succeeded=True, result=b"1")


async def test_members_settled_together_share_a_round_trip(
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

        flows = [
            await app.aenqueue_workflow(chord([add.s(i, 1) for i in range(3)], total.s()))
            for _ in range(2)
        ]
        leases = {le.task.id: le for le in await broker.claim(["default"], limit=10, lease_s=30)}
        assert len(leases) == 6
        # The second workflow's record is damaged: its members' scripts fail on the server.
        record = keys.workflow_keys(broker._ns, flows[1].id)[0]
        assert await broker._client.hdel(record, "version") == 1
        assert broker._lines is not None
        sent: list[int] = []
        call_each = broker._lines.call_each

        async def counting(commands: Sequence[tuple[Any, ...]]) -> list[Any]:
            sent.append(len(commands))
            replies: list[Any] = await call_each(commands)
            return replies

        monkeypatch.setattr(broker._lines, "call_each", counting)
        # With both graphs read, every settlement reaches the batcher in the same turn of the
        # event loop (a worker's slots whose handlers returned together); with the script on
        # the server, nothing is sent twice after a NOSCRIPT reply.
        for f in flows:
            assert await broker._graph(f.id) is not None
        await broker._client.script_load(broker._scripts["wf_advance"].script)
        ordered = [leases[step_task_id(f.id, i)] for i in range(3) for f in flows]
        outcomes = await asyncio.gather(
            *(broker.settle_step(le, DONE) for le in ordered), return_exceptions=True
        )

        # The six settlements went out in one round trip, the members of one workflow in one
        # script run.
        assert sent == [2]
        assert outcomes[0::2] == [True, True, True]
        assert all(isinstance(o, BrokerError) for o in outcomes[1::2])
        [body] = await broker.claim(["default"], limit=10, lease_s=30)
        assert body.task.id == step_task_id(flows[0].id, 3)
        assert await broker.settle_step(body, StepOutcome(succeeded=True, result=b"6"))
        assert (await broker.load_workflow(flows[0].id)).state is WorkflowState.SUCCEEDED


async def test_settlements_together_on_a_server_that_lost_its_scripts(tmp_path: Path) -> None:
    process = server(tmp_path / "redis")
    try:
        url = f"redis://127.0.0.1:{process.port}/0"
        async with namespaced_broker(url) as broker:
            app = App(broker)

            @app.task(name="add", max_retry=0)
            def add(a: int, b: int) -> int:
                return a + b

            info = await app.aenqueue_workflow(chord([add.s(i, 1) for i in range(4)], add.s(0)))
            leases = await broker.claim(["default"], limit=10, lease_s=30)
            assert len(leases) == 4
            with process.client() as raw:
                raw.script_flush()  # a private server: each NOSCRIPT reply ran nothing

            outcomes = await asyncio.gather(*(broker.settle_step(le, DONE) for le in leases))

            assert outcomes == [True, True, True, True]
            [body] = await broker.claim(["default"], limit=10, lease_s=30)
            assert body.task.id == step_task_id(info.id, 4)
    finally:
        process.stop()
