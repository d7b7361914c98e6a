"""Combining concurrent calls into one round trip or transaction.

While one batch is in flight, later calls queue up; when it returns they all go out together as
the next batch. A lone caller pays nothing extra (its call runs at once, in its own task), and
under load many producers share each round trip, which on a small machine is what limits the
rate of single-task enqueues (the brokers' enqueue). With ``gather_turns`` an idle combiner also
waits for the end of the current turn of the event loop, so that calls made in the same turn
share the first batch too (``conveyor server``'s FETCHes and ACKs, made by many connections at
once).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from conveyor.errors import BrokerError

__all__ = ["Combiner", "PerLoop"]

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")


class _Lead:
    """Handed to a waiting caller instead of an outcome: send the next batch yourself."""


_LEAD = _Lead()


class Combiner(Generic[In, Out]):
    """Run ``run`` on batches of calls, one batch at a time.

    Args:
        run: takes the queued inputs and returns one outcome per input, in order: a value, or
            an exception to raise in that caller only. An exception raised by ``run`` itself
            reaches every caller of the batch.
        gather_turns: how many turns of the event loop an idle combiner lets pass before its
            first batch goes out: 0 runs a lone call at once; 1 sends, at the end of the current
            turn, every call made in it; 2 also the calls of tasks started in this turn (their
            first step runs in the next). Batches after the first go out as soon as the one in
            flight returns.
        spare: the outcomes are interchangeable (claims): calls whose caller has gone (was
            cancelled) are left out of a batch, the outcomes go to the callers still waiting in
            the order they called, and an outcome nobody takes (its caller went away while the
            batch ran, or before it could take it) is passed to ``spare``. Without it a
            cancelled caller's call goes out all the same, and its outcome stands.
        inline: each batch is sent from the task of one of its callers (the first to call, or
            the first still waiting when the batch before returns) instead of a task of its own,
            which saves a task and a loop turn per batch. The price: cancelling that caller
            while the batch is in flight interrupts it. With ``spare`` the other callers' calls
            then go out again in the next batch (an interrupted claim gave nothing to anyone);
            without it they get :class:`~conveyor.errors.BrokerError` (their outcome is not
            known). For callers that are cancelled only when everything stops.
    """

    def __init__(
        self,
        run: Callable[[Sequence[In]], Awaitable[list[Out | Exception]]],
        *,
        gather_turns: int = 0,
        spare: Callable[[Out], None] | None = None,
        inline: bool = False,
    ) -> None:
        self._run = run
        self._gather_turns = gather_turns
        self._spare = spare
        self._inline = inline
        self._busy = False
        self._waiting: list[tuple[In, asyncio.Future[Out]]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._on_idle: list[asyncio.Future[None]] = []  # aclose() waiting for idle (inline)

    @property
    def idle(self) -> bool:
        """No batch in flight and no call waiting."""
        return not self._busy and not self._waiting

    async def __call__(self, item: In) -> Out:
        """Submit one call and wait for its own outcome."""
        if self._busy or self._gather_turns:
            future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
            self._waiting.append((item, future))
            if not self._busy:
                self._busy = True
                if self._inline:
                    return await self._lead(future, self._gather_turns)
                self._spawn_flush(self._gather_turns - 1)  # first step: the end of this turn
            try:
                handed = await future
            except asyncio.CancelledError:
                # Cancelled after its outcome was handed over, before it could take it.
                if future.done() and not future.cancelled() and not future.exception():
                    if future.result() is _LEAD:
                        self._hand_over()  # someone else sends the batch
                    elif self._spare:
                        self._spare(future.result())
                raise
            if handed is _LEAD:
                return await self._lead(future, 0)
            return handed
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
        while self._inline and self._busy:  # sent from callers' tasks: wait until idle
            went_idle = asyncio.get_running_loop().create_future()
            self._on_idle.append(went_idle)
            await went_idle

    def _hand_over(self) -> None:
        """Send the calls that queued up meanwhile as one batch, or go idle."""
        if not self._waiting:
            self._busy = False
            on_idle, self._on_idle = self._on_idle, []
            for waiter in on_idle:
                if not waiter.done():
                    waiter.set_result(None)
            return
        if self._inline:
            for _, future in self._waiting:
                if not future.done():
                    future.set_result(_LEAD)  # type: ignore[arg-type]
                    return
        self._spawn_flush(0)

    def _spawn_flush(self, wait_turns: int) -> None:
        task = asyncio.get_running_loop().create_task(self._flush(wait_turns))
        self._flushers.add(task)
        task.add_done_callback(self._flushers.discard)

    async def _flush(self, wait_turns: int) -> None:
        for _ in range(wait_turns):
            await asyncio.sleep(0)
        waiting, self._waiting = self._waiting, []
        if self._spare is not None:
            waiting = [(item, future) for item, future in waiting if not future.done()]
        try:
            outcomes = await self._run([item for item, _ in waiting]) if waiting else []
        except BaseException as exc:
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._settle(waiting, outcomes)
        finally:
            self._hand_over()

    async def _lead(self, own: asyncio.Future[Out], wait_turns: int) -> Out:
        """Send the waiting calls, ``own``'s among them, from this caller's task (``inline``)."""
        try:
            for _ in range(wait_turns):
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            if not own.done():
                own.cancel()  # left out (spare), or sent all the same by whoever sends next
            self._hand_over()
            raise
        waiting, self._waiting = self._waiting, []
        if self._spare is not None:  # callers gone are left out (own is done when handed _LEAD)
            waiting = [w for w in waiting if w[1] is own or not w[1].done()]
        mine = next(i for i, (_, future) in enumerate(waiting) if future is own)
        try:
            outcomes = await self._run([item for item, _ in waiting])
        except asyncio.CancelledError:
            self._interrupted(waiting, own)
            raise
        except Exception as exc:
            for _, future in waiting:
                if future is not own and not future.done():
                    future.set_exception(exc)
            raise
        finally:
            self._hand_over()
        # With ``spare`` the sender is the first caller still waiting: it takes the first.
        del waiting[mine]
        outcome = outcomes.pop(mine)
        self._settle(waiting, outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _interrupted(
        self, waiting: list[tuple[In, asyncio.Future[Out]]], own: asyncio.Future[Out]
    ) -> None:
        """The batch's sender was cancelled mid-flight: the other calls' outcomes are unknown."""
        others = [w for w in waiting if w[1] is not own and not w[1].done()]
        if self._spare is not None:
            self._waiting[:0] = others  # nothing was handed to them: they go out again
            return
        for _, future in others:
            future.set_exception(
                BrokerError("the call was interrupted (the caller sending its batch was cancelled)")
            )

    def _settle(
        self, waiting: list[tuple[In, asyncio.Future[Out]]], outcomes: list[Out | Exception]
    ) -> None:
        """Hand ``outcomes`` to the callers of ``waiting`` still there."""
        if self._spare is not None:
            self._hand_out(waiting, outcomes, self._spare)
            return
        for (_, future), outcome in zip(waiting, outcomes, strict=True):
            if future.done():  # the caller was cancelled; the outcome stands regardless
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    @staticmethod
    def _hand_out(
        waiting: list[tuple[In, asyncio.Future[Out]]],
        outcomes: list[Out | Exception],
        spare: Callable[[Out], None],
    ) -> None:
        """Interchangeable outcomes: first come, first served; the rest to ``spare``."""
        handed = iter(outcomes)
        for _, future in waiting:
            if future.done():
                continue
            outcome = next(handed)
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        for left in handed:
            if not isinstance(left, Exception):
                spare(left)


class PerLoop(Generic[T]):
    """One object per running event loop, made by ``make`` on first use there.

    A combiner wakes its callers through futures of its own loop, so a broker used from several
    loops (threads with loops of their own, a sync client's private loop) keeps one per loop.
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        # The loop asked for last and its object: the usual look-up (every call of a chain's
        # step) skips the weak mapping's own weak reference. One tuple, replaced whole, so a
        # thread with a loop of its own reads a consistent pair.
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], T] | None = None

    def made(self) -> T | None:
        """The running loop's object if it was made, else ``None`` (nothing is made)."""
        return self._made.get(asyncio.get_running_loop())

    def get(self) -> T:
        """The running loop's object."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop:
            return last[1]
        found = self._made.get(loop)
        if found is None:
            with self._lock:
                found = self._made.get(loop)
                if found is None:
                    found = self._made[loop] = self._make()
        self._last = (weakref.ref(loop), found)
        return found
