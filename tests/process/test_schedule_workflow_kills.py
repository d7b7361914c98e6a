"""A scheduler SIGKILLed between a workflow entry's fire and the workflow's creation, on a real
3-node Redis Cluster: the next scheduler creates that fire time's workflow, once.

The worker's scheduler dies at the ``after_schedule_fire`` crash point (armed at rate 1: the
first fire kills it), after the fire script recorded the workflow to create beside the entry and
before the workflow exists in its own slot. Two workers without the crash point then take over.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import Worker, spawn
from redis_servers import Fleet, start_cluster

from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.redis.schedule_keys import schedule_pending
from conveyor.brokers.workflows import step_task_id
from conveyor.message import TaskState
from conveyor.scheduling.entry import schedule_workflow_id
from support import wait_until

pytestmark = [pytest.mark.process, pytest.mark.redis, pytest.mark.timeout(120)]

TARGET = "schedule_workflow_app:app"
NAME = "proc.flow"


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with Fleet() as fleet:
        nodes = start_cluster(fleet, tmp_path / "cluster")
        yield f"redis+cluster://{nodes[0]},{nodes[1]}?namespace=swk{uuid.uuid4().hex[:8]}"


def read(url: str) -> tuple[float | None, set[str], set[str], list[str]]:
    """The entry's last fire time, the workflow ids, the pending records and the first steps."""

    async def go() -> tuple[float | None, set[str], set[str], list[str]]:
        broker = RedisBroker.from_url(url)
        try:
            entry = await broker.get_schedule(NAME)
            workflows = {w.id for w in await broker.list_workflows(None, limit=1000)}
            records, _ = schedule_pending(broker._ns, "swf-a")
            pending = {k.decode() for k in await broker._client.hkeys(records)}
            tasks = await broker.list_tasks("swf-a", TaskState.PENDING, limit=1000)
            return entry.last_fire_at, workflows, pending, [t.id for t in tasks]
        finally:
            await broker.close()

    return asyncio.run(go())


def test_a_scheduler_killed_between_fire_and_creation_loses_and_doubles_nothing(
    url: str, trace_dir: Path
) -> None:
    env = {"CONVEYOR_CRASHPOINTS": "after_schedule_fire:1"}
    crashing = Worker(url, trace_dir, "-q", "default", env=env, target=TARGET)
    try:
        assert crashing.proc.wait(timeout=30) == -signal.SIGKILL, "".join(crashing.lines)
    finally:
        crashing.stop()
    crashed_at, workflows, pending, tasks = read(url)
    assert crashed_at is not None
    crashed = schedule_workflow_id(NAME, crashed_at)
    assert (workflows, pending, tasks) == (set(), {crashed}, [])

    workers: list[Worker] = []
    for _ in range(2):
        spawn(workers, url, trace_dir, "-q", "default", target=TARGET)

    def took_over() -> bool:
        _, made, left, _ = read(url)
        return crashed in made and not left and len(made) >= 4

    wait_until(took_over, within=30)
    for worker in workers:
        worker.stop()

    last, workflows, pending, tasks = read(url)
    assert last is not None and not pending
    # Each workflow is a fire time's from the crashed one on, one each, with one first step.
    span = range(round(last - crashed_at) + 1)
    times = {schedule_workflow_id(NAME, crashed_at + k): k for k in span}
    assert workflows <= set(times)
    assert sorted(tasks) == sorted(step_task_id(w, 0) for w in workflows)
    fired = sorted(times[w] for w in workflows)
    assert fired[0] == 0 and fired[1:] == list(range(fired[1], fired[-1] + 1))
    logs = "".join(line for worker in workers for line in worker.lines)
    assert f"scheduled workflow {crashed} created" in logs
    assert logs.count(" fired for ") == len(workflows) - 1
