"""wait_for_tasks: wakes promptly when work becomes ready, else returns at its timeout.

"Promptly" is checked functionally: the call must finish well inside a long timeout (5 s),
allowing 2 s for a loaded machine. Nothing here measures speed.
"""

from __future__ import annotations

import asyncio

from conformance.factories import QUEUE, claim_one, enqueue_one, msg
from conveyor.brokers.protocol import Broker

LONG_TIMEOUT_S = 5.0
PROMPT_S = 2.0


async def start_waiting(broker: Broker, queues: list[str]) -> asyncio.Task[None]:
    waiter = asyncio.create_task(broker.wait_for_tasks(queues, LONG_TIMEOUT_S))
    for _ in range(20):  # let the waiter reach its wait (memory) or send its first command
        await asyncio.sleep(0)
    return waiter


async def test_returns_at_timeout_when_nothing_comes(broker: Broker) -> None:
    await asyncio.wait_for(broker.wait_for_tasks([QUEUE], 0.2), timeout=PROMPT_S)

    assert await broker.claim([QUEUE], limit=1, lease_s=30) == []


async def test_returns_promptly_when_a_task_is_enqueued(broker: Broker) -> None:
    waiter = await start_waiting(broker, ["elsewhere", QUEUE])

    info = await enqueue_one(broker)

    await asyncio.wait_for(waiter, timeout=PROMPT_S)
    assert (await claim_one(broker)).task.id == info.id


async def test_returns_promptly_when_work_is_already_ready(broker: Broker) -> None:
    await enqueue_one(broker)

    await asyncio.wait_for(broker.wait_for_tasks([QUEUE], LONG_TIMEOUT_S), timeout=PROMPT_S)

    assert len(await broker.claim([QUEUE], limit=1, lease_s=30)) == 1


async def test_returns_promptly_when_a_batch_is_enqueued(broker: Broker) -> None:
    waiter = await start_waiting(broker, [QUEUE])

    await broker.enqueue([msg(), msg()])

    await asyncio.wait_for(waiter, timeout=PROMPT_S)
    assert len(await broker.claim([QUEUE], limit=5, lease_s=30)) == 2


async def test_returns_when_a_scheduled_task_becomes_due(broker: Broker) -> None:
    info = await enqueue_one(broker, process_in_s=0.3)

    await asyncio.wait_for(broker.wait_for_tasks([QUEUE], LONG_TIMEOUT_S), timeout=PROMPT_S)

    # Spurious returns are allowed, so the due task may need one more wait.
    leases = await broker.claim([QUEUE], limit=1, lease_s=30)
    if not leases:
        await asyncio.wait_for(broker.wait_for_tasks([QUEUE], LONG_TIMEOUT_S), timeout=PROMPT_S)
        leases = await broker.claim([QUEUE], limit=1, lease_s=30)
    assert [lease.task.id for lease in leases] == [info.id]


async def test_returns_when_a_task_scheduled_while_waiting_becomes_due(broker: Broker) -> None:
    waiter = await start_waiting(broker, [QUEUE])

    await enqueue_one(broker, process_in_s=0.3)

    await asyncio.wait_for(waiter, timeout=PROMPT_S)


async def test_returns_promptly_when_a_task_is_released(broker: Broker) -> None:
    await enqueue_one(broker)
    lease = await claim_one(broker)
    waiter = await start_waiting(broker, [QUEUE])

    await broker.release(lease)

    await asyncio.wait_for(waiter, timeout=PROMPT_S)


async def test_returns_promptly_when_a_task_is_run_by_the_inspector(broker: Broker) -> None:
    info = await enqueue_one(broker, process_in_s=3600)
    waiter = await start_waiting(broker, [QUEUE])

    await broker.run_task(QUEUE, info.id)

    await asyncio.wait_for(waiter, timeout=PROMPT_S)


async def test_returns_promptly_when_the_queue_is_unpaused(broker: Broker) -> None:
    await broker.pause_queue(QUEUE)
    await enqueue_one(broker)
    waiter = await start_waiting(broker, [QUEUE])

    await broker.unpause_queue(QUEUE)

    await asyncio.wait_for(waiter, timeout=PROMPT_S)
    assert len(await broker.claim([QUEUE], limit=1, lease_s=30)) == 1


async def test_concurrent_waiters_all_wake(broker: Broker) -> None:
    waiters = [await start_waiting(broker, [QUEUE]) for _ in range(3)]

    await enqueue_one(broker)

    await asyncio.wait_for(asyncio.gather(*waiters), timeout=PROMPT_S)
    assert all(w.done() for w in waiters)
