"""Combining concurrent calls into one round trip or transaction (used for enqueue).

While one batch is in flight, later calls queue up; when it returns they all go out together as
the next batch. A lone caller pays nothing extra (its call runs at once, in its own task), and
under load many producers share each round trip, which on a small machine is what limits the
rate of single-task enqueues.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Combiner"]

In = TypeVar("In")
Out = TypeVar("Out")


class Combiner(Generic[In, Out]):
    """Run ``run`` on batches of calls, one batch at a time.

    Args:
        run: takes the queued inputs and returns one outcome per input, in order: a value, or
            an exception to raise in that caller only. An exception raised by ``run`` itself
            reaches every caller of the batch.
    """

    def __init__(self, run: Callable[[Sequence[In]], Awaitable[list[Out | Exception]]]) -> None:
        self._run = run
        self._busy = False
        self._waiting: list[tuple[In, asyncio.Future[Out]]] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def __call__(self, item: In) -> Out:
        """Submit one call and wait for its own outcome."""
        if self._busy:
            future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
            self._waiting.append((item, future))
            return await future
        self._busy = True
        try:
            [outcome] = await self._run([item])
        finally:
            self._hand_over()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        """Wait for batches still in flight (their callers get their outcomes)."""
        while self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)

    def _hand_over(self) -> None:
        """Send the calls that queued up meanwhile as one batch, or go idle."""
        if not self._waiting:
            self._busy = False
            return
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushers.add(task)
        task.add_done_callback(self._flushers.discard)

    async def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        try:
            outcomes = await self._run([item for item, _ in waiting])
        except BaseException as exc:
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), outcome in zip(waiting, outcomes, strict=True):
                if future.done():  # the caller was cancelled; the outcome stands regardless
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        finally:
            self._hand_over()
