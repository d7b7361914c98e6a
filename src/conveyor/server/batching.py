"""Sharing broker round trips between connections: one claim for many FETCHes, one
completion call for many ACKs.

Every FETCH and ACK is otherwise its own broker round trip (a Lua script or a SQLite
transaction), and on a small machine the round trips, not the work in them, bound the server's
rate. While one claim for a queue list is in flight, FETCHes for the same list queue up and go
out together as the next claim, with a ``limit`` of how many are waiting; ACKs do the same
through one ``complete`` call (each completion in it is still its own atomic step). A lone
client pays nothing extra: its call goes out at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from conveyor.brokers.combiner import Combiner
from conveyor.brokers.protocol import Broker
from conveyor.errors import ConveyorError
from conveyor.message import Completion, Lease

logger = logging.getLogger(__name__)

_Waiter = asyncio.Future[Lease | None]


class ClaimBatcher:
    """Claims for concurrent FETCHes, one broker call per queue list at a time."""

    def __init__(self, broker: Broker, *, lease_s: float) -> None:
        self._broker = broker
        self._lease_s = lease_s
        self._busy: set[tuple[str, ...]] = set()
        self._waiting: dict[tuple[str, ...], list[_Waiter]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def claim(self, queues: Sequence[str]) -> Lease | None:
        """One ready task of ``queues`` (tried in order), or ``None`` when none is ready."""
        key = tuple(queues)
        if key in self._busy:
            future: asyncio.Future[Lease | None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(key, []).append(future)
            try:
                return await future
            except asyncio.CancelledError:
                # Cancelled after its lease was handed over, before it could run again: the
                # task goes back rather than wait for its lease to lapse.
                if future.done() and not future.cancelled() and future.exception() is None:
                    lease = future.result()
                    if lease is not None:
                        self._spawn(self._give_back(lease))
                raise
        self._busy.add(key)
        try:
            leases = await self._broker.claim(key, limit=1, lease_s=self._lease_s)
        finally:
            self._hand_over(key)
        return leases[0] if leases else None

    def _hand_over(self, key: tuple[str, ...]) -> None:
        waiting = self._waiting.pop(key, [])
        if not waiting:
            self._busy.discard(key)
            return
        self._spawn(self._flush(key, waiting))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, key: tuple[str, ...], waiting: list[_Waiter]) -> None:
        try:
            live = sum(not f.done() for f in waiting)
            leases = (
                await self._broker.claim(key, limit=live, lease_s=self._lease_s) if live else []
            )
        except BaseException as exc:
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            handed = iter(leases)
            for future in waiting:
                if not future.done():  # first come, first served
                    future.set_result(next(handed, None))
            for orphan in handed:  # its FETCH went away meanwhile: straight back, uncounted
                self._spawn(self._give_back(orphan))
        finally:
            self._hand_over(key)

    async def _give_back(self, lease: Lease) -> None:
        try:
            await self._broker.release(lease)
        except ConveyorError as exc:  # the lease lapses instead and recovery brings it back
            logger.warning("could not give back task %s: %s", lease.task.id, exc)

    async def aclose(self) -> None:
        """Wait for claims still in flight."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class AckBatcher:
    """Completions for concurrent ACKs, one ``complete`` call at a time."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._combiner: Combiner[Lease, bool] = Combiner(self._complete)

    async def complete(self, lease: Lease) -> bool:
        """Record the attempt under ``lease`` as a success; ``False`` when the lease was lost."""
        return await self._combiner(lease)

    async def _complete(self, leases: Sequence[Lease]) -> list[bool | Exception]:
        return list(await self._broker.complete([Completion(lease=le) for le in leases]))

    async def aclose(self) -> None:
        """Wait for completions still in flight."""
        await self._combiner.aclose()
