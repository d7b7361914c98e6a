"""Sharing broker round trips between connections: one claim for many FETCHes, one
completion call for many ACKs.

Every FETCH and ACK is otherwise its own broker round trip (a Lua script or a SQLite
transaction), and on a small machine the round trips, not the work in them, bound the server's
rate. Calls made during one turn of the event loop (the requests of every connection that had
data in that turn) go out together at the end of the turn, as one claim per queue list with a
``limit`` of how many FETCHes wait, or one ``complete`` call (each completion in it is still its
own atomic step). While a batch is in flight, later calls queue up and go out as the next batch
the moment it returns. A lone client waits one loop turn (microseconds) for its call to go out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from conveyor.brokers.protocol import Broker
from conveyor.errors import ConveyorError
from conveyor.message import Completion, Lease

logger = logging.getLogger(__name__)

_Waiter = asyncio.Future[Lease | None]


class _Tasks:
    """Background batches, kept referenced until done."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class ClaimBatcher:
    """Claims for concurrent FETCHes, one broker call per queue list at a time."""

    def __init__(self, broker: Broker, *, lease_s: float) -> None:
        self._broker = broker
        self._lease_s = lease_s
        self._busy: set[tuple[str, ...]] = set()
        """Queue lists with a claim in flight or about to go out."""
        self._waiting: dict[tuple[str, ...], list[_Waiter]] = {}
        self._tasks = _Tasks()

    async def claim(self, queues: Sequence[str]) -> Lease | None:
        """One ready task of ``queues`` (tried in order), or ``None`` when none is ready."""
        key = tuple(queues)
        loop = asyncio.get_running_loop()
        future: _Waiter = loop.create_future()
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = []
        waiting.append(future)
        if key not in self._busy:
            self._busy.add(key)
            self._tasks.spawn(self._flush(key))  # its first step runs at the end of this turn
        try:
            return await future
        except asyncio.CancelledError:
            # Cancelled after its lease was handed over, before it could run again: the
            # task goes back rather than wait for its lease to lapse.
            if future.done() and not future.cancelled() and future.exception() is None:
                lease = future.result()
                if lease is not None:
                    self._tasks.spawn(self._give_back(lease))
            raise

    def _hand_over(self, key: tuple[str, ...]) -> None:
        """Send the FETCHes that queued up on ``key`` meanwhile as the next claim, or go idle."""
        if key in self._waiting:
            self._tasks.spawn(self._flush(key))
        else:
            self._busy.discard(key)

    async def _flush(self, key: tuple[str, ...]) -> None:
        """One claim for every FETCH waiting on ``key`` when this task first runs."""
        waiting = self._waiting.pop(key, [])
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
                self._tasks.spawn(self._give_back(orphan))
        finally:
            self._hand_over(key)

    async def _give_back(self, lease: Lease) -> None:
        try:
            await self._broker.release(lease)
        except ConveyorError as exc:  # the lease lapses instead and recovery brings it back
            logger.warning("could not give back task %s: %s", lease.task.id, exc)

    async def aclose(self) -> None:
        """Wait for claims still in flight."""
        await self._tasks.wait()


class AckBatcher:
    """Completions for concurrent ACKs, one ``complete`` call at a time."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._busy = False
        self._waiting: list[tuple[Lease, asyncio.Future[bool]]] = []
        self._tasks = _Tasks()

    async def complete(self, lease: Lease) -> bool:
        """Record the attempt under ``lease`` as a success; ``False`` when the lease was lost.

        Raises what the broker raised for the batch (``BrokerError``), or for this completion.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((lease, future))
        if not self._busy:
            self._busy = True
            self._tasks.spawn(self._flush())  # its first step runs at the end of this turn
        # Cancelled meanwhile, the completion stands all the same.
        return await future

    def _hand_over(self) -> None:
        if self._waiting:
            self._tasks.spawn(self._flush())
        else:
            self._busy = False

    async def _flush(self) -> None:
        """One ``complete`` call for every ACK waiting when this task first runs."""
        waiting, self._waiting = self._waiting, []
        try:
            done = await self._broker.complete([Completion(lease=le) for le, _ in waiting])
        except BaseException as exc:
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), ok in zip(waiting, done, strict=True):
                if not future.done():
                    future.set_result(ok)
        finally:
            self._hand_over()

    async def aclose(self) -> None:
        """Wait for completions still in flight."""
        await self._tasks.wait()
