"""Flow control for the Redis broker (see :mod:`conveyor.brokers.limits`).

Queue length limits live in a key of the queue (``keys.queue_limit``, in its Cluster slot),
which ``enqueue.lua`` reads in the same step as it stores (``limits.lua``'s ``make_room``).

Rate limits are one hash for the namespace (``keys.rate_limits``), and so are task type
concurrency limits (``keys.concurrency_limits``). A claim is one script in one slot, and these
hashes are not in the claimed queues' slots, so each broker object keeps a copy, read again at
most :data:`~conveyor.brokers.limits.RATE_REFRESH_S` after the last.

On a standalone server the copy goes to ``claim.lua``, which enforces both limits in the same
step: one token bucket per type (``keys.bucket_prefix``), and per type a running count kept in
step with its tasks (``keys.running_prefix``): a claim adds the tasks it starts and names the
count in their records, and every way out of ACTIVE, lease recovery included, takes its task
off in the same step. A claim reads one number however many tasks run.

On Redis Cluster a type's bucket and its running tasks live in the type's own slot, shared by
every queue, and a claim asks for them in a step of its own: see
:mod:`~conveyor.brokers.redis.type_permits`. A queue's concurrency limit is a key of the queue,
compared with its active set, on both.
"""

from __future__ import annotations

import time

from conveyor.brokers.limits import (
    CONCURRENCY_RECHECK_S,
    RATE_REFRESH_S,
    FlowControl,
    Overflow,
    QueueLimit,
    Rate,
)
from conveyor.brokers.redis import keys
from conveyor.brokers.redis.base import ScriptBatch
from conveyor.brokers.redis.replies import as_bytes
from conveyor.brokers.redis.type_permits import TypePermitsMixin

_OVERFLOWS: dict[str, Overflow] = {"reject": "reject", "drop_oldest": "drop_oldest"}


def _rate(spec: bytes) -> Rate | None:
    """A stored ``"<count> <period µs>"``, or ``None`` when it does not read as one."""
    try:
        count, period_us = (int(part) for part in spec.split())
        return Rate(count, period_us / 1_000_000)
    except ValueError:
        return None


class LimitsMixin(TypePermitsMixin):
    """The :class:`~conveyor.brokers.limits.FlowControl` methods of the Redis broker."""

    # The rate and type concurrency limits as claim.lua reads them, and when (monotonic) to
    # read them again.
    _rate_spec: str = ""
    _concurrency_spec: str = ""
    _rate_spec_until: float = float("-inf")

    async def set_queue_limit(self, queue: str, limit: QueueLimit | None) -> None:
        """Set or remove ``queue``'s length limit."""
        key = keys.queue_limit(self._ns, keys.queue_keys(self._ns, queue).queue)
        with self._errors():
            if limit is None:
                await self._client.delete(key)
            else:
                await self._client.set(key, f"{limit.max_length} {limit.overflow}")

    async def queue_limit(self, queue: str) -> QueueLimit | None:
        """``queue``'s length limit, or ``None``."""
        key = keys.queue_limit(self._ns, keys.queue_keys(self._ns, queue).queue)
        with self._errors():
            spec = await self._client.get(key)
        if spec is None:
            return None
        parts = as_bytes(spec).decode(errors="replace").split()
        if len(parts) != 2 or not parts[0].isdigit() or parts[1] not in _OVERFLOWS:
            return None  # unreadable, so enqueue.lua ignores it too
        return QueueLimit(max_length=int(parts[0]), overflow=_OVERFLOWS[parts[1]])

    async def set_rate_limit(self, task_type: str, rate: Rate | None) -> None:
        """Set or remove ``task_type``'s rate limit (this object sees it at once)."""
        key = keys.rate_limits(self._ns)
        with self._errors():
            if rate is None:
                await self._client.hdel(key, task_type)
                if not self._cluster:
                    await self._client.delete(
                        keys.bucket_prefix(self._ns) + task_type,
                        keys.bucket_out_prefix(self._ns) + task_type,
                    )
            else:
                period_us = max(1, round(rate.period_s * 1_000_000))
                await self._client.hset(key, task_type, f"{rate.count} {period_us}")
        if rate is None and self._cluster:
            await self._drop_type_keys(task_type, permits=False, bucket=True)
        self._rate_spec_until = float("-inf")

    async def rate_limits(self) -> dict[str, Rate]:
        """Every task type's rate limit."""
        with self._errors():
            stored = await self._client.hgetall(keys.rate_limits(self._ns))
        found = {as_bytes(k).decode(): _rate(as_bytes(v)) for k, v in stored.items()}
        return {name: rate for name, rate in found.items() if rate is not None}

    async def set_task_concurrency(self, task_type: str, max_active: int | None) -> None:
        """Set or remove ``task_type``'s concurrency limit (this object sees it at once)."""
        key = keys.concurrency_limits(self._ns)
        with self._errors():
            if max_active is None:
                await self._client.hdel(key, task_type)
            else:
                await self._client.hset(key, task_type, str(max_active))
        self._rate_spec_until = float("-inf")
        if max_active is None:
            await self._forget_held(task_type)
            if self._cluster:  # set again, it counts the tasks running then
                await self._drop_type_keys(task_type, permits=True, bucket=False)
        elif self._cluster:
            await self._count_permits(task_type)
        else:
            await self._count_running(task_type)

    async def _forget_held(self, task_type: str) -> None:
        """A type's limit is gone: its held tasks start when due, like any scheduled task, and
        its queues stop waking workers for its slots."""
        for queue in await self._all_queues():
            with self._errors():
                await self._client.hdel(keys.slot_waits(self._ns, queue), task_type)
                await self._client.delete(keys.held_for_slot(self._ns, queue, task_type))

    async def task_concurrency(self) -> dict[str, int]:
        """Every task type's concurrency limit."""
        with self._errors():
            stored = await self._client.hgetall(keys.concurrency_limits(self._ns))
        found = {as_bytes(k).decode(): as_bytes(v).decode() for k, v in stored.items()}
        return {name: int(n) for name, n in found.items() if n.isdigit() and int(n) > 0}

    async def set_queue_concurrency(self, queue: str, max_active: int | None) -> None:
        """Set or remove ``queue``'s concurrency limit."""
        key = keys.queue_concurrency(self._ns, keys.queue_keys(self._ns, queue).queue)
        with self._errors():
            if max_active is None:
                await self._client.delete(key)
            else:
                await self._client.set(key, str(max_active))

    async def queue_concurrency(self, queue: str) -> int | None:
        """``queue``'s concurrency limit, or ``None``."""
        key = keys.queue_concurrency(self._ns, keys.queue_keys(self._ns, queue).queue)
        with self._errors():
            stored = await self._client.get(key)
        text = None if stored is None else as_bytes(stored).decode(errors="replace")
        return int(text) if text is not None and text.isdigit() else None

    async def _count_running(self, task_type: str) -> None:
        """Add the tasks of ``task_type`` already ACTIVE to its running count, so a new limit
        counts them too: one step per queue (``count_running.lua``), each task counted once
        whatever claims run meanwhile (a standalone server)."""
        run = keys.running_prefix(self._ns) + task_type
        for queue in await self._all_queues():
            queue_keys = self._keys(queue)
            await self._run(
                "count_running", [queue_keys.active, run], [queue_keys.task_prefix, task_type]
            )

    async def _refresh_rates(self) -> None:
        """Read the rate and type concurrency limits again when this object's copy is older
        than the refresh time."""
        if time.monotonic() < self._rate_spec_until:
            return
        rates = await self.rate_limits()
        self._rate_spec = " ".join(
            f"{name} {rate.count} {max(1, round(rate.period_s * 1_000_000))}"
            for name, rate in rates.items()
        )
        limits = await self.task_concurrency()
        self._concurrency_spec = " ".join(f"{name} {n}" for name, n in limits.items())
        self._type_rates, self._type_limits = rates, limits
        self._rate_spec_until = time.monotonic() + RATE_REFRESH_S

    def _rate_args(self, batch: ScriptBatch) -> list[str]:
        """claim.lua's ARGV[4] to ARGV[9]: the buckets' prefix, the rate limits, the running
        counts' prefix, the type concurrency limits, the longest hold for a slot (µs) and the
        prefix of the buckets' counts of tokens out. None on Cluster, where the claim leaves
        type limits to the type's slot (type_permits.py)."""
        hold = str(round(CONCURRENCY_RECHECK_S * 1_000_000))
        if self._cluster:
            return ["", "", "", "", hold, ""]
        return [
            keys.bucket_prefix(self._ns) if self._rate_spec else "",
            self._rate_spec,
            keys.running_prefix(self._ns) if self._concurrency_spec else "",
            self._concurrency_spec,
            hold,
            keys.bucket_out_prefix(self._ns) if self._rate_spec else "",
        ]


def _conforms(b: LimitsMixin) -> FlowControl:
    return b
