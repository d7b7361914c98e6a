"""``Combiner(inline=True)``: batches sent from a caller's task, and what a cancelled sender does.

Each test drives the batches itself (a gate future the fake ``run`` waits on), so which calls
share a batch is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from conveyor.brokers.combiner import Combiner
from conveyor.errors import BrokerError


class Recorder:
    """A ``run`` that records each batch and the task that sent it, and waits on a gate."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.senders: list[asyncio.Task[object] | None] = []
        self.gates: list[asyncio.Future[None]] = []
        self.started = asyncio.Event()

    async def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        self.senders.append(asyncio.current_task())
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        self.started.set()
        await gate
        return [i * 10 for i in items]

    async def wait_batches(self, n: int) -> None:
        while len(self.batches) < n:
            self.started.clear()
            await self.started.wait()

    def open(self, index: int) -> None:
        self.gates[index].set_result(None)


async def test_calls_of_a_turn_go_out_together_from_the_first_callers_task() -> None:
    run = Recorder()
    combiner: Combiner[int, int] = Combiner(run, gather_turns=1, inline=True)
    calls = [asyncio.create_task(combiner(i)) for i in (1, 2, 3)]
    await run.wait_batches(1)
    assert run.batches == [[1, 2, 3]]
    assert run.senders == [calls[0]]  # no task of the combiner's own
    run.open(0)
    assert await asyncio.gather(*calls) == [10, 20, 30]
    assert combiner.idle


async def test_calls_made_while_a_batch_is_in_flight_go_next_sent_by_the_first_waiting() -> None:
    run = Recorder()
    combiner: Combiner[int, int] = Combiner(run, gather_turns=1, inline=True)
    first = asyncio.create_task(combiner(1))
    await run.wait_batches(1)
    later = [asyncio.create_task(combiner(i)) for i in (2, 3)]
    await asyncio.sleep(0)  # both queued
    run.open(0)
    assert await first == 10
    await run.wait_batches(2)
    assert run.batches[1] == [2, 3]
    assert run.senders[1] is later[0]
    run.open(1)
    assert await asyncio.gather(*later) == [20, 30]
    assert combiner.idle


async def test_a_sender_cancelled_mid_flight_interrupts_a_batch_of_claims_which_go_again() -> None:
    run = Recorder()
    spared: list[int] = []
    combiner: Combiner[int, int] = Combiner(run, gather_turns=1, spare=spared.append, inline=True)
    sender = asyncio.create_task(combiner(1))
    other = asyncio.create_task(combiner(2))
    await run.wait_batches(1)
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    await run.wait_batches(2)  # the other call goes out again, from its own task
    assert run.batches == [[1, 2], [2]]
    assert run.senders[1] is other
    run.open(1)
    assert await other == 20
    assert spared == []
    assert combiner.idle


async def test_a_sender_cancelled_mid_flight_leaves_the_other_calls_outcome_unknown() -> None:
    run = Recorder()
    combiner: Combiner[int, int] = Combiner(run, gather_turns=1, inline=True)
    sender = asyncio.create_task(combiner(1))
    other = asyncio.create_task(combiner(2))
    await run.wait_batches(1)
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    with pytest.raises(BrokerError, match="interrupted"):
        await other
    assert run.batches == [[1, 2]]
    assert combiner.idle


async def test_a_sender_cancelled_before_sending_hands_the_batch_on() -> None:
    run = Recorder()
    combiner: Combiner[int, int] = Combiner(run, gather_turns=1, inline=True)
    sender = asyncio.create_task(combiner(1))
    other = asyncio.create_task(combiner(2))
    await asyncio.sleep(0)  # both queued; the sender waits for the end of the turn
    sender.cancel()
    await run.wait_batches(1)
    # Without spare a cancelled caller's call goes out all the same, and its outcome stands.
    assert run.batches == [[1, 2]]
    assert run.senders == [other]
    run.open(0)
    assert await other == 20
    assert sender.cancelled()


async def test_aclose_waits_for_a_batch_sent_from_a_callers_task() -> None:
    run = Recorder()
    combiner: Combiner[int, int] = Combiner(run, gather_turns=1, inline=True)
    call = asyncio.create_task(combiner(1))
    await run.wait_batches(1)
    closing = asyncio.create_task(combiner.aclose())
    await asyncio.sleep(0)
    assert not closing.done()
    run.open(0)
    await closing
    assert call.done() and call.result() == 10


@pytest.mark.parametrize("inline", [False, True])
def test_a_combiner_serves_one_event_loop_after_another(inline: bool) -> None:
    """A broker's combiner (not kept per loop) driven by one loop, then another."""

    async def double(items: Sequence[int]) -> list[int | Exception]:
        return [i * 2 for i in items]

    combiner: Combiner[int, int] = Combiner(double, gather_turns=1, inline=inline)

    async def calls() -> list[int]:
        return await asyncio.gather(combiner(1), combiner(2))

    assert asyncio.run(calls()) == [2, 4]
    assert asyncio.run(calls()) == [2, 4]
