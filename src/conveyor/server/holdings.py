"""The leases the server holds on behalf of its clients, renewed while their holders live.

A masenko task is held by the connection that fetched it; a Faktory job by its worker id. The
server renews every live holding at a third of the lease (one missed renewal must not lose a
task); a holder that went quiet (a Faktory worker whose BEATs stopped, a job past its
``reserve_for``) is simply no longer renewed, so its lease lapses and the recovery scan gives the
task back, with a failure counted, exactly as for a crashed Python worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

from conveyor.brokers.protocol import Broker
from conveyor.brokers.redis.base import raise_if_cancelled
from conveyor.errors import BrokerError
from conveyor.message import Lease

logger = logging.getLogger(__name__)

RECOVER_EVERY_S = 5.0
"""How often the server looks for lapsed leases (as a worker's recoverer does)."""
RECOVER_DELAY_S = 1.0
"""How long a recovered task waits before it can be fetched again."""


@dataclass(slots=True)
class Held:
    """One fetched task: its lease, and until when (monotonic) the server keeps renewing it."""

    lease: Lease
    renew_until: float = float("inf")


@dataclass(slots=True)
class _Holder:
    tasks: dict[Hashable, Held] = field(default_factory=dict)
    seen: float = field(default_factory=time.monotonic)
    ttl_s: float = float("inf")


class Holdings:
    """Leases by holder (a connection or a worker id) and key (a masenko id or a jid)."""

    def __init__(self, broker: Broker, *, lease_s: float) -> None:
        self._broker = broker
        self.lease_s = lease_s
        self._holders: dict[Hashable, _Holder] = {}

    def touch(self, holder: Hashable, *, ttl_s: float = float("inf")) -> None:
        """Record that ``holder`` is alive; it is renewed until ``ttl_s`` passes without a touch."""
        h = self._holders.get(holder)
        if h is None:
            h = self._holders[holder] = _Holder(ttl_s=ttl_s)
        h.seen, h.ttl_s = time.monotonic(), ttl_s

    def add(self, holder: Hashable, key: Hashable, held: Held) -> None:
        """Hold ``held`` for ``holder`` under ``key``."""
        h = self._holders.get(holder)
        if h is None:
            h = self._holders[holder] = _Holder()
        h.tasks[key] = held

    def get(self, holder: Hashable, key: Hashable) -> Held | None:
        """The holding under ``key``, if ``holder`` has it."""
        h = self._holders.get(holder)
        return None if h is None else h.tasks.get(key)

    def pop(self, holder: Hashable, key: Hashable) -> Held | None:
        """Stop holding ``key`` for ``holder`` and return it (``None`` when not held)."""
        h = self._holders.get(holder)
        return None if h is None else h.tasks.pop(key, None)

    def drop_holder(self, holder: Hashable) -> list[Held]:
        """Forget ``holder`` and return what it held."""
        h = self._holders.pop(holder, None)
        return [] if h is None else list(h.tasks.values())

    def held_by(self, holder: Hashable) -> int:
        """How many tasks ``holder`` holds."""
        h = self._holders.get(holder)
        return 0 if h is None else len(h.tasks)

    def holders(self) -> list[Hashable]:
        """Every holder the server knows."""
        return list(self._holders)

    def count(self) -> int:
        """How many tasks are held in all (safe to call from another thread)."""
        for _ in range(3):
            try:
                return sum(len(h.tasks) for h in list(self._holders.values()))
            except RuntimeError:  # the loop's thread changed the dict while it was copied
                continue
        return 0

    async def renew_once(self) -> None:
        """Extend every live holding; forget those the broker says are lost or gone quiet."""
        now = time.monotonic()
        batch: list[tuple[Hashable, Hashable, Held]] = []
        for holder, h in list(self._holders.items()):
            alive = now - h.seen <= h.ttl_s
            for key, held in list(h.tasks.items()):
                if alive and held.renew_until > now:
                    batch.append((holder, key, held))
                else:  # left to lapse: the recovery scan gives it back with a failure counted
                    logger.warning(
                        "holder %s went quiet: task %s left to its lease",
                        holder,
                        held.lease.task.id,
                        extra={"task_id": held.lease.task.id, "queue": held.lease.task.queue},
                    )
                    del h.tasks[key]
            if not alive and not h.tasks:
                del self._holders[holder]
        if not batch:
            return
        kept = await self._broker.extend_leases([b[2].lease for b in batch], self.lease_s)
        for (holder, key, _held), ok in zip(batch, kept, strict=True):
            if not ok:
                self.pop(holder, key)

    async def run(self) -> None:
        """Renew at a third of the lease and recover lapsed leases, until cancelled."""
        # Renew at a third of the lease, not at its end: one missed renewal must not lose a task.
        every = min(self.lease_s / 3, RECOVER_EVERY_S)
        next_recover = 0.0
        while True:
            try:
                await self.renew_once()
                if time.monotonic() >= next_recover:
                    next_recover = time.monotonic() + RECOVER_EVERY_S
                    await self._broker.recover_expired(delay_s=RECOVER_DELAY_S)
            except BrokerError as exc:
                logger.warning("renewing leases failed: %s (retrying)", exc)
            raise_if_cancelled()  # a cancel redis-py swallowed mid-command still ends the loop
            await asyncio.sleep(every)
