"""Helpers for worker tests: run a Server on the test's loop, enqueue quickly, inject faults."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

from conveyor.brokers.protocol import Broker
from conveyor.errors import BrokerUnavailableError
from conveyor.message import Lease, Task, TaskInfo, TaskMessage, TaskState, encode_json, new_task_id
from conveyor.middleware import Handler
from conveyor.worker.context import TaskContext
from conveyor.worker.server import Server
from support import eventually


def no_delay(retried: int, error: BaseException, task: Task) -> timedelta:
    """A retry delay of zero, so retry paths run at test speed."""
    return timedelta(0)


# Small intervals so every path runs within a second; tests override what they exercise.
FAST: dict[str, Any] = {
    "concurrency": 4,
    "lease": 5.0,
    "recover_interval": 0.1,
    "recover_delay": 0.0,
    "janitor_interval": 0.2,
    "poll_interval": 0.2,
    "shutdown_timeout": 2.0,
    "retry_delay": no_delay,
}


def fast(**overrides: Any) -> dict[str, Any]:
    """FAST with ``overrides`` applied."""
    return {**FAST, **overrides}


class BlockingHandler:
    """An async handler that never finishes by itself; records that it started and was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, ctx: TaskContext, task: Task) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def enqueue(
    broker: Broker, task_type: str = "job", payload: Any = None, **fields: Any
) -> TaskMessage:
    """Enqueue one task and return its message."""
    raw = fields.pop("raw_payload", None)
    message = TaskMessage(
        id=str(new_task_id()),
        type=task_type,
        payload=encode_json(payload) if raw is None else raw,
        **fields,
    )
    await broker.enqueue([message])
    return message


async def task_state(broker: Broker, message: TaskMessage) -> TaskInfo:
    """The stored task for ``message``."""
    return await broker.get_task(message.queue, message.id)


async def wait_for_state(
    broker: Broker, message: TaskMessage, state: TaskState, *, within: float = 5.0
) -> TaskInfo:
    """Wait until the task reaches ``state``; return it."""

    async def reached() -> TaskInfo | None:
        info = await task_state(broker, message)
        return info if info.state is state else None

    return await eventually(reached, within=within)


@contextlib.asynccontextmanager
async def serving(server: Server, handler: Handler) -> AsyncIterator[Server]:
    """Serve on this loop until the block ends, then shut down gracefully."""
    task = asyncio.create_task(server.serve(handler))

    async def up() -> bool:
        return server.ready or task.done()

    await eventually(up)
    if task.done():
        task.result()
    try:
        yield server
    finally:
        await server.shutdown()
        await task


class FaultyBroker:
    """Wraps a real broker; told to, it refuses or drops lease renewals, or fails claims."""

    def __init__(self, inner: Broker) -> None:
        self._inner = inner
        self.lose_leases = False
        self.skip_renewals = False
        self.claim_failures = 0
        self.describe_failures = 0
        self.claims_failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def extend_leases(self, leases: Sequence[Lease], lease_s: float) -> list[bool]:
        if self.lose_leases:
            return [False] * len(leases)
        if self.skip_renewals:  # renewals "lost on the network": the broker never sees them
            return [True] * len(leases)
        return await self._inner.extend_leases(leases, lease_s)

    async def describe(self) -> Any:
        if self.describe_failures > 0:
            self.describe_failures -= 1
            raise BrokerUnavailableError("injected outage at start")
        return await self._inner.describe()

    async def claim(self, queues: Sequence[str], *, limit: int, lease_s: float) -> list[Lease]:
        if self.claim_failures > 0:
            self.claim_failures -= 1
            self.claims_failed += 1
            raise BrokerUnavailableError("injected outage")
        return await self._inner.claim(queues, limit=limit, lease_s=lease_s)
