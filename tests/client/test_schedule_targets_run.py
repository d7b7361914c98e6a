"""A scheduled signature and a scheduled chain run on a real worker (SQLite file and Redis)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor import App, AsyncInspector, ScheduleTarget, WorkflowInfo, WorkflowState, chain
from conveyor.brokers.protocol import Broker
from conveyor.brokers.workflows import WorkflowBroker
from conveyor.worker.server import Server
from support import delete_namespace, eventually
from worker.harness import fast, serving


@pytest.fixture(params=["sqlite", "redis"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scheduled.db'}"
        return
    redis_url: str = request.getfixturevalue("redis_url")
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    joiner = "&" if "?" in redis_url else "?"
    try:
        yield f"{redis_url}{joiner}namespace={namespace}"
    finally:
        await delete_namespace(redis_url, namespace)


async def test_a_scheduled_signature_and_chain_run_every_second(url: str) -> None:
    app = App(url)
    ran: list[tuple[str, object]] = []

    @app.task(name="ping")
    def ping(word: str) -> str:
        ran.append(("ping", word))
        return word

    @app.task(name="shout")
    def shout(word: str, times: int = 1) -> str:
        ran.append(("shout", word))
        return word.upper() * times

    app.schedule(ping.s("hello"), every=1)
    app.schedule(chain(ping.si("flow"), shout.s(times=2)), every=1, name="flow")

    broker = app.async_client.broker
    assert isinstance(broker, Broker) and isinstance(broker, WorkflowBroker)
    scheduler = app.scheduler(broker)
    running = asyncio.create_task(scheduler.serve())
    try:
        async with serving(Server(broker, **fast()), app.mux):

            async def both_ran() -> bool:
                done = await broker.list_workflows(WorkflowState.SUCCEEDED)
                return ("ping", "hello") in ran and ("shout", "flow") in ran and bool(done)

            await eventually(both_ran, within=15)
            [done, *_] = await broker.list_workflows(WorkflowState.SUCCEEDED)
            infos = {s.name: s for s in await AsyncInspector(broker).list_schedules()}
    finally:
        scheduler.request_stop()
        await running
        await app.aclose()

    assert WorkflowInfo.from_record(done).result == "FLOWFLOW"
    assert infos["ping"].target is ScheduleTarget.TASK
    assert infos["ping"].last_task_id is not None
    assert infos["ping"].last_task_id.startswith("ping:")
    assert infos["flow"].target is ScheduleTarget.CHAIN
    assert infos["flow"].last_task_id is not None
