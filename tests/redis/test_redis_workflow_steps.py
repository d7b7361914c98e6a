"""Redis: the batches of a bulk archive or delete leave workflow steps alone and name them, so
each step is archived or deleted in one script with its workflow's failure (``wf_manage.lua``),
however the steps fall across batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from redis_servers import namespaced_broker

from conveyor import App, AsyncInspector, WorkflowState, chain
from conveyor.brokers.redis import inspection
from conveyor.message import TaskMessage, TaskState

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("op", ["archive", "delete"])
async def test_steps_spread_over_batches_each_fail_their_workflow(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    monkeypatch.setattr(inspection, "BATCH", 3)
    async with namespaced_broker(redis_url) as broker:
        app = App(broker)

        @app.task(name="add", max_retry=0)
        def add(a: int, b: int) -> int:
            return a + b

        scripts: list[str] = []
        run = broker._run

        async def recording(name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any:
            scripts.append(name)
            return await run(name, keys_, args)

        monkeypatch.setattr(broker, "_run", recording)
        flows = []
        for i in range(4):  # plain tasks and workflow steps, interleaved in the pending set
            await broker.enqueue([TaskMessage(id=f"plain{i}", type="add", payload=b"[1, 1]")])
            flows.append(await app.aenqueue_workflow(chain(add.s(i, 1), add.s(2))))
        inspector = AsyncInspector(broker)
        if op == "archive":
            assert await inspector.archive_all_tasks("default", TaskState.PENDING) == 8
            assert (await broker.queue_stats("default")).archived == 8
        else:
            assert await inspector.delete_all_tasks("default", TaskState.PENDING) == 8
            assert (await broker.queue_stats("default")).size == 0
        assert scripts.count("wf_manage") == 4  # each step with its workflow
        for flow in flows:
            assert (await inspector.get_workflow(flow.id)).state is WorkflowState.FAILED
        assert await broker.claim(["default"], limit=10, lease_s=30) == []
