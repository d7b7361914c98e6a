"""A child process for the SQLite multi-process tests (run as a script, never collected).

python sqlite_child.py claim <db> <batch>   claim+complete until empty; print each claimed id
python sqlite_child.py enqueue <db>         enqueue one task at a time for ever; print each
                                            acknowledged id (after enqueue returned)
python sqlite_child.py enqueue-claim <db>   also claim and complete (retained) tasks between
                                            enqueues, for a mix of writes
python sqlite_child.py enqueue-checkpoint <db>  like enqueue, with no pause between checkpoints so
                                            WAL checkpoints and rewinds run all the time
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys

from conveyor.brokers.sqlite import SqliteBroker, checkpoint
from conveyor.message import Completion, TaskMessage


async def claim(db: str, batch: int) -> None:
    broker = SqliteBroker.from_url(f"sqlite:///{db}")
    try:
        while leases := await broker.claim(["default"], limit=batch, lease_s=60):
            for lease in leases:
                print(lease.task.id, flush=False)
            assert all(await broker.complete([Completion(lease=le) for le in leases]))
    finally:
        await broker.close()
    sys.stdout.flush()


async def enqueue(db: str, *, with_claims: bool) -> None:
    broker = SqliteBroker.from_url(f"sqlite:///{db}")
    pid = os.getpid()
    for n in itertools.count():
        task_id = f"{pid}-{n}"
        # Retained for an hour, so completed tasks stay visible to the parent's check.
        message = TaskMessage(id=task_id, type="kill:test", payload=b"[1,2]", retention_s=3600)
        await broker.enqueue([message])
        print(task_id, flush=True)
        if with_claims and n % 2:
            leases = await broker.claim(["default"], limit=2, lease_s=60)
            await broker.complete([Completion(lease=le, result=b"1") for le in leases])


def main() -> None:
    command, db = sys.argv[1], sys.argv[2]
    if command == "claim":
        asyncio.run(claim(db, int(sys.argv[3])))
        return
    if command == "enqueue-checkpoint":
        checkpoint.INTERVAL_S = 0.0
        checkpoint.SAFETY_FRAMES = 256
    asyncio.run(enqueue(db, with_claims=command == "enqueue-claim"))


if __name__ == "__main__":
    main()
