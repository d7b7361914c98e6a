"""FETCHes sharing claims and ACKs sharing completion calls (conveyor.server.batching)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from conveyor.brokers.memory import MemoryBroker
from conveyor.message import Completion, Lease, TaskMessage, TaskState
from conveyor.server.batching import AckBatcher, ClaimBatcher
from support import eventually


class GatedBroker(MemoryBroker):
    """A memory broker whose claims and completions wait for ``gate``, and are counted."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.claims: list[int] = []
        self.completions: list[int] = []
        self.one_at_a_time = False

    async def claim(self, queues: Sequence[str], *, limit: int, lease_s: float) -> list[Lease]:
        self.claims.append(limit)
        await self.gate.wait()
        if self.one_at_a_time:
            self.gate.clear()
        return await super().claim(queues, limit=limit, lease_s=lease_s)

    async def complete(self, completions: Sequence[Completion]) -> list[bool]:
        self.completions.append(len(completions))
        await self.gate.wait()
        return await super().complete(completions)


async def _enqueue(broker: MemoryBroker, n: int) -> None:
    await broker.enqueue([TaskMessage(id=f"t{i}", type="t") for i in range(n)])


async def test_waiting_fetches_share_one_claim_first_come_first_served() -> None:
    broker = GatedBroker()
    await _enqueue(broker, 3)
    claims = ClaimBatcher(broker, lease_s=30)
    first = asyncio.create_task(claims.claim(["default"]))
    await eventually(lambda: _true(broker.claims == [1]))
    waiting = [asyncio.create_task(claims.claim(["default"])) for _ in range(3)]
    await asyncio.sleep(0)  # let them queue behind the claim in flight
    broker.gate.set()

    got = [await first, *[await w for w in waiting]]

    assert broker.claims == [1, 3]  # the three waiting FETCHes went out as one claim
    assert [None if g is None else g.task.id for g in got] == ["t0", "t1", "t2", None]
    await claims.aclose()


async def test_a_fetch_gone_while_its_claim_ran_gives_its_task_back() -> None:
    broker = GatedBroker()
    broker.one_at_a_time = True
    await _enqueue(broker, 3)
    claims = ClaimBatcher(broker, lease_s=30)
    first = asyncio.create_task(claims.claim(["default"]))
    await eventually(lambda: _true(broker.claims == [1]))
    kept, dropped = (asyncio.create_task(claims.claim(["default"])) for _ in range(2))
    await asyncio.sleep(0)
    broker.gate.set()
    await first
    await eventually(lambda: _true(broker.claims == [1, 2]))  # the shared claim is in flight
    dropped.cancel()  # its connection went away meanwhile
    broker.gate.set()
    lease = await kept
    await claims.aclose()

    assert lease is not None and lease.task.id == "t1"
    task = await broker.get_task("default", "t2")
    assert (task.state, task.retried) == (TaskState.PENDING, 0)  # back, no failure counted


async def test_concurrent_acks_share_one_completion_call() -> None:
    broker = GatedBroker()
    broker.gate.set()
    await _enqueue(broker, 4)
    leases = await broker.claim(["default"], limit=4, lease_s=30)
    broker.gate.clear()
    acks = AckBatcher(broker)
    broker.completions.clear()

    first = asyncio.create_task(acks.complete(leases[0]))
    await eventually(lambda: _true(broker.completions == [1]))
    rest = [asyncio.create_task(acks.complete(le)) for le in leases[1:]]
    await asyncio.sleep(0)
    broker.gate.set()

    assert [await first, *[await r for r in rest]] == [True] * 4
    assert broker.completions == [1, 3]
    assert (await broker.queue_stats("default")).processed_today == 4
    await acks.aclose()


async def _true(value: bool) -> bool:
    return value


async def test_a_fetch_gone_before_its_claim_goes_out_is_left_out_of_it() -> None:
    broker = GatedBroker()
    broker.gate.set()
    await _enqueue(broker, 3)
    claims = ClaimBatcher(broker, lease_s=30)
    gone, kept = (asyncio.create_task(claims.claim(["default"])) for _ in range(2))
    await asyncio.sleep(0)  # both wait; their claim goes out at the end of this turn
    gone.cancel()

    lease = await kept
    await claims.aclose()

    assert broker.claims == [1]  # only the FETCH still waiting was claimed for
    assert lease is not None and lease.task.id == "t0"
    assert (await broker.queue_stats("default")).pending == 2
