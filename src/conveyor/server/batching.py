"""Sharing broker round trips between connections: one claim for many FETCHes, one
completion call for many ACKs.

Every FETCH and ACK is otherwise its own broker round trip (a Lua script or a SQLite
transaction), and on a small machine the round trips, not the work in them, bound the server's
rate. Both are :class:`~conveyor.brokers.combiner.Combiner`\\ s that gather a loop turn: calls
made during one turn of the event loop (the requests of every connection that had data in that
turn) go out together at the end of the turn, as one claim per queue list with a ``limit`` of
how many FETCHes wait, or one ``complete`` call (each completion in it is still its own atomic
step). While a batch is in flight, later calls queue up and go out as the next batch the moment
it returns. A lone client waits one loop turn (microseconds) for its call to go out. Each
batch is sent from the task of one of its FETCHes or ACKs (the combiners' ``inline``), not a
task of its own: sessions are cancelled only when the server stops.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from conveyor.brokers.combiner import Combiner
from conveyor.brokers.protocol import Broker
from conveyor.errors import ConveyorError
from conveyor.message import Completion, Lease

logger = logging.getLogger(__name__)

_PRUNE_AT = 64  # queue lists kept before idle ones are dropped


class ClaimBatcher:
    """Claims for concurrent FETCHes, one broker call per queue list at a time."""

    def __init__(self, broker: Broker, *, lease_s: float) -> None:
        self._broker = broker
        self._lease_s = lease_s
        # Per queue list while it has FETCHes waiting or a claim in flight (then dropped, so
        # clients naming ever new queue lists leave nothing behind).
        self._combiners: dict[tuple[str, ...], Combiner[None, Lease | None]] = {}
        self._giving_back: set[asyncio.Task[None]] = set()

    async def claim(self, queues: Sequence[str]) -> Lease | None:
        """One ready task of ``queues`` (tried in order), or ``None`` when none is ready."""
        key = tuple(queues)
        combiner = self._combiners.get(key)
        if combiner is None:
            if len(self._combiners) >= _PRUNE_AT:  # left behind by FETCHes cancelled early
                for idle in [k for k, c in self._combiners.items() if c.idle]:
                    del self._combiners[idle]
            combiner = self._combiners[key] = Combiner(
                functools.partial(self._claim, key),
                gather_turns=1,
                spare=self._spare,
                inline=True,  # sessions are cancelled only when the server stops
            )
        try:
            return await combiner(None)
        finally:
            if combiner.idle and self._combiners.get(key) is combiner:
                del self._combiners[key]

    async def _claim(
        self, key: tuple[str, ...], fetches: Sequence[None]
    ) -> list[Lease | Exception | None]:
        """One claim for every FETCH still waiting on ``key``; ``None`` for those left empty."""
        leases = await self._broker.claim(key, limit=len(fetches), lease_s=self._lease_s)
        handed: list[Lease | Exception | None] = [*leases]
        handed.extend(None for _ in range(len(fetches) - len(leases)))
        return handed

    def _spare(self, lease: Lease | None) -> None:
        """A lease whose FETCH went away meanwhile: straight back, uncounted."""
        if lease is not None:
            task = asyncio.get_running_loop().create_task(self._give_back(lease))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)

    async def _give_back(self, lease: Lease) -> None:
        try:
            await self._broker.release(lease)
        except ConveyorError as exc:  # the lease lapses instead and recovery brings it back
            logger.warning("could not give back task %s: %s", lease.task.id, exc)

    async def aclose(self) -> None:
        """Wait for claims still in flight, and for the tasks they give back."""
        for combiner in list(self._combiners.values()):
            await combiner.aclose()
        while self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)


class AckBatcher:
    """Completions for concurrent ACKs, one ``complete`` call at a time."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        # Cancelled meanwhile, an ACK's completion goes out and stands all the same (unless
        # the ACK was sending its batch: sent from a caller's task, see ClaimBatcher).
        self._combiner: Combiner[Lease, bool] = Combiner(
            self._complete, gather_turns=1, inline=True
        )

    async def complete(self, lease: Lease) -> bool:
        """Record the attempt under ``lease`` as a success; ``False`` when the lease was lost.

        Raises what the broker raised for the batch (``BrokerError``), or for this completion.
        """
        return await self._combiner(lease)

    async def _complete(self, leases: Sequence[Lease]) -> list[bool | Exception]:
        done = await self._broker.complete([Completion(lease=le) for le in leases])
        return [*done]

    async def aclose(self) -> None:
        """Wait for completions still in flight."""
        await self._combiner.aclose()
