"""The lease keeper ends when cancelled, even if a broker call swallowed the cancellation."""

from __future__ import annotations

import asyncio

from conveyor.brokers.memory import MemoryBroker
from conveyor.server.holdings import Holdings


class SwallowingBroker(MemoryBroker):
    """Answers recover_expired after a cancellation instead of raising it, once.

    redis-py's asyncio client can do this when a cancellation arrives while a command is in
    flight: the caller's task is left "cancelling" with no CancelledError raised.
    """

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.swallowed = False

    async def recover_expired(self, *, delay_s: float, max_crashes: int = 3) -> int:
        self.entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.swallowed = True
        return 0


async def test_the_keeper_ends_after_a_swallowed_cancellation() -> None:
    broker = SwallowingBroker()
    keeper = asyncio.create_task(Holdings(broker, lease_s=30.0).run())
    await asyncio.wait_for(broker.entered.wait(), 5)
    keeper.cancel()
    done, _ = await asyncio.wait({keeper}, timeout=5)
    assert done == {keeper}
    assert keeper.cancelled()
    assert broker.swallowed
    await broker.close()
