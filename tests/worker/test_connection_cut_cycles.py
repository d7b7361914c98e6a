"""G3 at CI scale: a worker's Redis connections cut again and again while work keeps arriving.

The worker reaches Redis through a :class:`~faultproxy.FaultProxy`; the producer and the
test's checks go straight to Redis. Two scenarios (docs: reliability spec, section 2 item 4):

- 20 cycles of ``reset`` and ``blackhole`` (held 0.2-1.5 s) at random, seeded moments: after
  each heal the worker must complete more tasks within a deadline (liveness, printed as the
  cycle's recovery time), and at the end every task is completed, nothing is left pending or
  active, and a task ran twice only if a fault hit it in flight (its lease lapsed). The
  worker's read timeout is shortened to 2 s (10 s in production): with it, a half-open
  connection stalls the worker about 10 s from the cut, and 10 blackholes would take minutes.
- 20 lost completion replies (the proxy forwards complete.lua's request, then cuts the
  connection before the reply): each task in such a batch ends COMPLETED, counted once, and
  ran once (or twice, only after its lease lapsed); never left ACTIVE, never lost.

No throughput figure is asserted: recovery times are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import random
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest

from conveyor import Task, TaskState
from conveyor.brokers.redis import RedisBroker
from conveyor.brokers.redis.base import script_source
from conveyor.message import TaskMessage
from conveyor.worker.context import TaskContext
from conveyor.worker.server import Server
from faultproxy import FaultProxy
from support import eventually
from worker.harness import fast, serving

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(120)]

SEED = 20240603
CYCLES = 20
AFTER_HEAL = 25  # completions the worker must make after each heal
DEADLINE_S = 10.0  # the spec's figure, used here only as a liveness bound
ACK_CUTS = 20
READ_TIMEOUT_S = 2.0  # the worker's socket read timeout in the cut cycles (see there)


def proxied_url(redis_url: str, proxy: FaultProxy, namespace: str) -> str:
    db = urlsplit(redis_url).path or "/0"
    return f"redis://127.0.0.1:{proxy.port}{db}?namespace={namespace}"


class Producer:
    """Enqueues ``batch`` tasks every ``every_s`` seconds until stopped; knows what was stored."""

    def __init__(self, broker: RedisBroker, prefix: str, *, batch: int, every_s: float) -> None:
        self._broker = broker
        self._prefix = prefix
        self._batch = batch
        self._every_s = every_s
        self.stored: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            ids = [f"{self._prefix}-{i:05d}" for i in range(n, n + self._batch)]
            n += self._batch
            await self._broker.enqueue(
                [
                    TaskMessage(id=i, type="job", queue="default", payload=b"{}", retention_s=600)
                    for i in ids
                ]
            )
            self.stored.extend(ids)  # acknowledged: from here on it must not be lost
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._every_s)


def completed_count(broker: RedisBroker) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return (await broker.queue_stats("default")).completed

    return count


async def reach(count: Callable[[], Awaitable[int]], target: int, *, within: float) -> float:
    """Wait until ``count()`` reaches ``target``; return how long that took."""
    start = time.monotonic()

    async def reached() -> bool:
        return await count() >= target

    await eventually(reached, within=within, interval=0.02)
    return time.monotonic() - start


async def check_quiet_and_complete(
    broker: RedisBroker, stored: list[str], runs: dict[str, list[float]], day: str
) -> None:
    """Every stored task completed, counted once; nothing left in any other state."""
    stats = await broker.queue_stats("default")
    assert (stats.pending, stats.scheduled, stats.active, stats.retry, stats.archived) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert stats.completed == len(stored)
    if datetime.now(UTC).date().isoformat() == day:  # the counters are per (broker) UTC day
        # processed counts successes and failed attempts: no task's success recorded twice.
        assert stats.processed_today - stats.failed_today == len(stored)
    assert set(runs) == set(stored)  # every one ran; nothing ran that was not enqueued


async def test_twenty_cuts_and_blackholes_lose_nothing_and_the_worker_resumes(
    redis_url: str,
    proxy: FaultProxy,
    direct: tuple[RedisBroker, str],
) -> None:
    broker, namespace = direct
    # A half-open connection is noticed only by the read timeout (10 s by default, counted from
    # the command sent into the blackhole): shortened (?socket_timeout=) so 10 blackholes fit
    # in CI time.
    day = datetime.now(UTC).date().isoformat()
    rng = random.Random(SEED)
    runs: dict[str, list[float]] = defaultdict(list)  # task id -> start of each run (monotonic)

    async def handler(ctx: TaskContext, task: Task) -> None:
        runs[ctx.task_id].append(time.monotonic())
        await asyncio.sleep(0.005)

    completed = completed_count(broker)
    kinds = ["reset"] * (CYCLES // 2) + ["blackhole"] * (CYCLES - CYCLES // 2)
    rng.shuffle(kinds)
    # Each fault's window (monotonic): from the cut until the worker has surely noticed it, the
    # read timeout after the heal (a connection silenced by the blackhole stays half-open).
    faults: list[tuple[float, float]] = []
    producer = Producer(broker, "c", batch=4, every_s=0.04)
    server = Server(
        proxied_url(redis_url, proxy, namespace) + f"&socket_timeout={READ_TIMEOUT_S}",
        **fast(lease=2.0, recover_interval=0.2, poll_interval=0.2),
    )
    async with serving(server, handler):
        producer.start()
        await reach(completed, AFTER_HEAL, within=DEADLINE_S)
        for cycle, kind in enumerate(kinds, start=1):
            await asyncio.sleep(rng.uniform(0.05, 0.6))  # a random moment, not a check
            connections, silenced = proxy.connections, proxy.silenced
            cut = time.monotonic()
            if kind == "reset":
                proxy.reset()
                held = 0.0
            else:
                held = rng.uniform(0.2, 1.5)
                proxy.blackhole(True)
                await asyncio.sleep(held)  # the fault's duration
                proxy.blackhole(False)
            faults.append((cut, time.monotonic() + READ_TIMEOUT_S))
            base = await completed()
            recovery = await reach(completed, base + AFTER_HEAL, within=DEADLINE_S)
            print(
                f"G3 cycle {cycle:2d} {kind:9s} held {held:.2f}s: {AFTER_HEAL} completions "
                f"{recovery:.2f}s after the heal (reconnects {proxy.connections - connections}, "
                f"silenced {proxy.silenced - silenced})"
            )
        await producer.stop()
        await reach(completed, len(producer.stored), within=30)
    assert proxy.connections > 1 and proxy.silenced > 0  # the faults reached the worker

    await check_quiet_and_complete(broker, producer.stored, runs, day)
    # A second run is allowed only for a task in flight during a fault: its earlier run began
    # before the fault's window closed, the next one after the fault began, and the broker
    # recorded the lapsed lease that let it run again.
    twice = {task_id: starts for task_id, starts in runs.items() if len(starts) > 1}
    for task_id, starts in twice.items():
        for first, again in itertools.pairwise(starts):
            assert any(first <= end and cut <= again for cut, end in faults), (task_id, starts)
        assert (await broker.get_task("default", task_id)).retried >= len(starts) - 1
    print(f"G3 cuts: {len(producer.stored)} tasks, {len(twice)} ran again after a cut")


async def test_lost_completion_replies_leave_each_task_completed_once(
    redis_url: str, proxy: FaultProxy, direct: tuple[RedisBroker, str]
) -> None:
    broker, namespace = direct
    day = datetime.now(UTC).date().isoformat()
    rng = random.Random(SEED + 1)
    runs: dict[str, list[float]] = defaultdict(list)

    async def handler(ctx: TaskContext, task: Task) -> None:
        runs[ctx.task_id].append(time.monotonic())
        await asyncio.sleep(0.005)

    # complete.lua's traffic: EVALSHA names it by the sha of its text (no other call does).
    marker = hashlib.sha1(script_source("complete").encode()).hexdigest().encode()
    completed = completed_count(broker)
    producer = Producer(broker, "ack", batch=2, every_s=0.05)
    server = Server(
        proxied_url(redis_url, proxy, namespace),
        **fast(lease=1.0, recover_interval=0.1, poll_interval=0.2),
    )
    async with serving(server, handler):
        producer.start()
        await reach(completed, 5, within=DEADLINE_S)
        for cut in range(1, ACK_CUTS + 1):
            await asyncio.sleep(rng.uniform(0.0, 0.2))  # a random moment, not a check
            proxy.lose_next_reply(marker)

            async def lost(cut: int = cut) -> bool:
                return len(proxy.lost_replies) >= cut

            await eventually(lost, within=DEADLINE_S)
            base = await completed()
            recovery = await reach(completed, base + 5, within=DEADLINE_S)
            print(f"G3 ack cut {cut:2d}: 5 completions {recovery:.2f}s after the lost reply")
        await producer.stop()
        await reach(completed, len(producer.stored), within=30)
        worker_stats = server.stats

    await check_quiet_and_complete(broker, producer.stored, runs, day)
    hit = sorted({i.decode() for r in proxy.lost_replies for i in re.findall(rb"ack-\d{5}", r)})
    assert len(proxy.lost_replies) == ACK_CUTS
    assert len(hit) >= ACK_CUTS  # each lost reply was a completion of at least one task
    for task_id in hit:
        info = await broker.get_task("default", task_id)
        assert info.state is TaskState.COMPLETED
        # Its script ran before the reply was lost: run once, unless its lease lapsed first.
        assert len(runs[task_id]) == 1 or info.retried >= len(runs[task_id]) - 1, task_id
    again = [task_id for task_id in hit if len(runs[task_id]) > 1]
    print(
        f"G3 ack cuts: {len(hit)} completions' replies lost, {len(again)} re-run; worker "
        f"saw {worker_stats.lease_lost} refused completions, {worker_stats.broker_errors} errors"
    )
