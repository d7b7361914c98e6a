"""Several recoverers on one store at once recover each lapsed task exactly once.

Every worker runs a recoverer, so after a crash they all race for the same lapsed leases (a bug
once seen in asynq, where each one re-queued the task). Three broker instances on one SQLite
file, or one Redis namespace, call ``recover_expired`` together.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from conveyor.brokers.protocol import LEASE_EXPIRED_ERROR, Broker
from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.message import TaskMessage, TaskState
from support import delete_namespace, eventually

TASKS = 60


@pytest.fixture(params=["sqlite", "redis"])
async def open_shared(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Broker]]:
    """A factory of broker instances that share one store."""
    opened: list[Broker] = []
    if request.param == "sqlite":
        path = tmp_path / "shared.db"

        def make() -> Broker:
            opened.append(SqliteBroker(path))
            return opened[-1]
    else:
        url = request.getfixturevalue("redis_url")
        namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"

        def make() -> Broker:
            opened.append(RedisBroker.from_url(f"{url}?namespace={namespace}"))
            return opened[-1]

    yield make
    for broker in opened:
        await broker.close()
    if request.param == "redis":
        await delete_namespace(url, namespace)


async def test_racing_recoverers_recover_each_task_once(open_shared: Callable[[], Broker]) -> None:
    first, *others = [open_shared() for _ in range(3)]
    messages = [
        TaskMessage(id=f"r{i}", type="job", queue="default", payload=b"{}", max_retry=5)
        for i in range(TASKS)
    ]
    await first.enqueue(messages)
    leases = await first.claim(["default"], limit=TASKS, lease_s=0.2)
    assert len(leases) == TASKS
    lapsed_at = max(lease.expires_at for lease in leases)

    async def lapsed() -> bool:
        return time.time() > lapsed_at + 0.05

    await eventually(lapsed)
    counts = await asyncio.gather(*(b.recover_expired(delay_s=3600) for b in [first, *others] * 2))
    assert sum(counts) == TASKS, counts
    for m in messages:
        info = await first.get_task("default", m.id)
        assert (info.state, info.retried, info.last_error) == (
            TaskState.RETRY,
            1,
            LEASE_EXPIRED_ERROR,
        )
