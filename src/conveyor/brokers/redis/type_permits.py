"""Redis Cluster: task type limits fleet-wide, in the type's own slot (``type_permit.lua``).

On Cluster every queue is in a slot of its own and a script runs in one slot, so a claim
(``claim.lua``, the queue's slot) cannot reach a count shared by all the queues a type is
enqueued to. The type's limit state lives in a slot of its own instead (``keys.type_keys``):

* a **permit** per task started under the type's concurrency limit (a ZSET, member
  ``"<task id>:<token>"``, score = the lease's expiry), and
* the type's **rate bucket** (the same bucket as a standalone server's, in the type's slot).

A claim is then two or three steps, each atomic in its slot. The claim script leases the tasks
without looking at type limits; for the claimed tasks of a limited type, one ``type_permit.lua``
run per type grants a permit (and takes a rate token) or refuses; the refused are given back in
the queue's slot (``permit_hold.lua``): SCHEDULED until their token is due, or held for a
permit, as a standalone claim holds them (no failed attempt, nothing counted), fenced by the
claim's token, so the caller never sees them. Extending a lease extends its permit to the same
expiry; every way out of ACTIVE through this broker (completion, retry, archive, release, and
so workflow settlements and the protocol server's acks) drops the permit after the queue's step
(:meth:`TypePermitsMixin._release_permits`).

Crash safety: a permit lapses by itself at its lease's expiry (every permit step first drops
the lapsed ones). A worker that dies between two steps, or a release that never arrives,
leaves a permit that counts until the lease would have been recovered anyway; so recovery by
another process needs no step in the type's slot, and a crashed worker's slots come back with
its leases. A claim that dies between its steps leaves its tasks ACTIVE under a lease nobody
holds: they are recovered as a crash, like any task whose worker died after the claim.

Held tasks wake up: a release that leaves a permit free reads the queues with tasks held for one
(``type_permit.lua``'s waiting set, in the type's slot) and moves their held tasks back to the
front of pending (``permit_hold.lua`` 'unhold', waking idle workers); a queue found holding no
task at all (deleted, even with tasks held) leaves the waiting set ('forget', which keeps it
should a claim have held tasks of it since the release read it); a claim that holds tasks
looks for a free permit right after, so a release racing the hold is never missed. A held task
is also due by itself when the type's oldest permit may lapse (a crashed worker's), at the
latest after :data:`~conveyor.brokers.limits.CONCURRENCY_RECHECK_S`.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Container, Sequence
from typing import Any

from conveyor.brokers.limits import CONCURRENCY_RECHECK_S, Rate
from conveyor.brokers.redis import keys
from conveyor.brokers.redis.base import RedisBrokerBase
from conveyor.brokers.redis.replies import as_bytes
from conveyor.errors import BrokerError, ConveyorError
from conveyor.message import Lease

# The logger the broker had as one module: every part of it logs under that name.
logger = logging.getLogger("conveyor.brokers.redis.broker")

_HOLD_US = round(CONCURRENCY_RECHECK_S * 1_000_000)


def _member(lease: Lease) -> str:
    """A lease's permit: its task and fencing token (a later attempt's is another)."""
    return f"{lease.task.id}:{lease.token}"


def _by_type(leases: Sequence[Lease], types: Container[str]) -> dict[str, list[Lease]]:
    """The leases whose type is in ``types``, grouped by type (claim order kept)."""
    found: dict[str, list[Lease]] = {}
    for lease in leases:
        if lease.task.type in types:
            found.setdefault(lease.task.type, []).append(lease)
    return found


class TypePermitsMixin(RedisBrokerBase):
    """The type permits of :class:`~conveyor.brokers.redis.RedisBroker` on Cluster."""

    # The rate and type concurrency limits as this object last read them (limits.py).
    _type_rates: dict[str, Rate] = {}  # replaced, never changed in place
    _type_limits: dict[str, int] = {}

    def _type_keys(self, task_type: str) -> list[str]:
        return keys.type_keys(self._ns, task_type)

    async def _permit_claimed(self, queue: str, leases: list[Lease]) -> list[Lease]:
        """The leases of a Cluster claim from ``queue`` that may start: the tasks of a limited
        type get a permit or a rate token first; the refused are held in the queue (not
        returned). A type whose slot cannot be reached gives its tasks back (released) and,
        when nothing may start, raises."""
        limited = _by_type(leases, self._type_rates.keys() | self._type_limits.keys())
        if not limited:
            return leases
        dropped: set[int] = set()
        refused: list[tuple[Lease, int]] = []
        slot_held: set[str] = set()
        failure: BrokerError | None = None
        for task_type, chosen in limited.items():
            if failure is not None:  # a type's slot failed: the rest go back too
                await self._give_back_unpermitted(chosen)
                dropped.update(id(le) for le in chosen)
                continue
            try:
                reply = await self._take_permits(queue, task_type, chosen)
            except BrokerError as exc:
                failure = exc
                await self._give_back_unpermitted(chosen)
                dropped.update(id(le) for le in chosen)
                continue
            for lease, due in zip(chosen, reply, strict=True):
                if int(due) != 0:
                    refused.append((lease, int(due)))
                    dropped.add(id(lease))
                    if int(due) < 0:
                        slot_held.add(task_type)
        if refused:
            await self._hold(queue, refused)
        for task_type in slot_held:  # a permit released while holding: move them back now
            try:
                await self._wake_held(task_type)
            except ConveyorError:  # they are due by themselves, at the latest
                logger.warning("could not look for a free permit of %r", task_type, exc_info=True)
        granted = [le for le in leases if id(le) not in dropped]
        if failure is not None and not granted:
            raise failure
        return granted

    async def _take_permits(self, queue: str, task_type: str, chosen: list[Lease]) -> list[Any]:
        """One ``type_permit.lua`` 'take' for ``chosen`` (one type, one claim's lease expiry)."""
        rate = self._type_rates.get(task_type)
        limit = self._type_limits.get(task_type)
        args: list[Any] = [
            "take",
            round(chosen[0].expires_at * 1_000_000),
            "" if limit is None else limit,
            "" if rate is None else f"{rate.count} {max(1, round(rate.period_s * 1_000_000))}",
            _HOLD_US,
            queue,
            uuid.uuid4().hex,
            *(_member(le) for le in chosen),
        ]
        reply: list[Any] = await self._run("type_permit", self._type_keys(task_type), args)
        return reply

    async def _hold(self, queue: str, refused: list[tuple[Lease, int]]) -> None:
        """Give refused tasks back in their queue's slot (``permit_hold.lua`` 'hold'). Should
        that fail, they stay ACTIVE under a lease nobody holds, and are recovered with it."""
        args: list[Any] = ["hold"]
        for lease, due in refused:
            args.extend((lease.task.id, lease.token, lease.task.type, due))
        try:
            await self._run("permit_hold", self._keys(queue).block, args)
        except ConveyorError:
            logger.warning(
                "could not hold back %d tasks of queue %r refused by their type's limit: "
                "they are recovered when their leases lapse",
                len(refused),
                queue,
                exc_info=True,
            )

    async def _give_back_unpermitted(self, leases: Sequence[Lease]) -> None:
        """Tasks whose permit could not be asked for: back to the front of their queue (and
        any permit a lost reply granted dropped), best effort: else they lapse."""
        for lease in leases:
            with contextlib.suppress(ConveyorError):
                await self.release(lease)

    async def _extend_permits(self, leases: Sequence[Lease], expiry_us: int) -> None:
        """Cluster: the permits of ``leases`` (extended to ``expiry_us``) move with them. Should
        the type's slot not answer, a permit lapses at its old expiry though its task runs on:
        logged, as the limit may then admit one more until the task ends."""
        for task_type, chosen in _by_type(leases, self._type_limits).items():
            args = ["extend", expiry_us, *(_member(le) for le in chosen)]
            try:
                await self._run("type_permit", self._type_keys(task_type), args)
            except ConveyorError:
                logger.warning("could not extend permits of type %r", task_type, exc_info=True)

    async def _release_permits(self, leases: Sequence[Lease]) -> None:
        """Cluster, after ``leases`` left ACTIVE (or were found lost): drop their permits and
        wake the tasks held for one. Never raises: a permit not dropped lapses with its lease.
        The one place every way out of ACTIVE through this broker releases permits."""
        if not self._cluster:
            return
        try:
            await self._refresh_rates()
            for task_type, chosen in _by_type(leases, self._type_limits).items():
                await self._wake_held(task_type, *(_member(le) for le in chosen))
        except ConveyorError:
            logger.warning("could not release type permits (they lapse)", exc_info=True)

    async def _wake_held(self, task_type: str, *members: str) -> None:
        """Drop ``members``' permits (none: only look), then, when permits are free, move tasks
        held for one back to their queues' pending (one ``permit_hold.lua`` run per queue)."""
        limit = self._type_limits.get(task_type)
        args: list[Any] = ["release", "" if limit is None else limit, *members]
        reply = await self._run("type_permit", self._type_keys(task_type), args)
        free = int(reply[0])
        gone: list[Any] = []
        for raw, entry in zip(reply[1::2], reply[2::2], strict=True):
            queue = as_bytes(raw).decode()
            unhold = ["unhold", task_type, free]
            if int(await self._run("permit_hold", self._keys(queue).block, unhold)) < 0:
                gone.extend((queue, entry))
        if gone:  # deleted (or emptied) queues leave the waiting set, unless held for since
            await self._run("type_permit", self._type_keys(task_type), ["forget", *gone])

    async def _count_permits(self, task_type: str) -> None:
        """Cluster, a concurrency limit just set: a permit for each task of the type already
        ACTIVE (each queue read, then the permits added: a task that leaves ACTIVE in between
        keeps its permit until its lease's expiry)."""
        for queue in await self._all_queues():
            reply = await self._run("permit_hold", self._keys(queue).block, ["running", task_type])
            if not reply:
                continue
            args: list[Any] = ["add"]
            for i in range(0, len(reply) - 2, 3):
                args.extend((f"{as_bytes(reply[i]).decode()}:{int(reply[i + 1])}", reply[i + 2]))
            await self._run("type_permit", self._type_keys(task_type), args)

    async def _drop_type_keys(self, task_type: str, *, permits: bool, bucket: bool) -> None:
        """Cluster, a limit removed: its permits (and held queues) or its bucket go."""
        found = self._type_keys(task_type)
        chosen = ([found[0], found[3]] if permits else []) + (found[1:3] if bucket else [])
        with self._errors():
            for key in chosen:
                await self._client.delete(key)
