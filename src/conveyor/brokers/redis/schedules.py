"""The Redis broker's schedule store (key layout in ``schedule_keys.py``).

The rules are the memory broker's (``brokers/memory/schedules.py``). Each entry is a hash in
the Cluster slot of the queue its tasks go to, beside that queue's due set, so every step on an
entry is one Lua script in one slot, and the fire step enqueues the tasks in the same script
that moves the cursor (``schedule_fire.lua``): on Cluster too, a fire time is enqueued once.

A workflow entry's fire is two steps, each safe to repeat: the fire script records the
workflows to create beside the entry (same slot, same script as the cursor's compare-and-set),
then each is created in its own slot and its record deleted; a record a dead scheduler left is
finished by the next scheduler's round. So each fire time gets exactly one workflow, on Cluster
too (``schedule_workflows.py``).

What is not one step: the name index (``ns:schedules``, its own slot) is written before an entry
is stored and cleared after it is removed, and moving an entry to another queue removes it from
the old queue's slot before storing it in the new one (a crash between loses the entry until
its app's next scheduler start writes it again; it is never stored twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from conveyor.brokers.redis.base import RedisBrokerBase
from conveyor.brokers.redis.keys import registry
from conveyor.brokers.redis.records import message_args, pairs
from conveyor.brokers.redis.replies import as_bytes
from conveyor.brokers.redis.schedule_keys import (
    schedule_due,
    schedule_index,
    schedule_pending,
    schedule_prefix,
    schedule_record,
    schedule_workflow_queues,
)
from conveyor.brokers.redis.schedule_workflows import (
    PENDING_BATCH,
    RedisScheduleWorkflows,
    pending_record,
)
from conveyor.brokers.schedules import DueSchedules, FireOutcome, ScheduleFire, ScheduleRecord
from conveyor.errors import ConveyorError, ScheduleNotFoundError
from conveyor.message import Encoding, validate_name
from conveyor.worker.crashpoints import crashpoint

__all__ = ["RedisSchedules"]

logger = logging.getLogger(__name__)

_FIRES_PER_CALL = 200  # bounds one script's run time on a shared server
_US = 1_000_000


def _us(seconds: float) -> str:
    return str(round(seconds * _US))


def _text(fields: dict[bytes, bytes], name: bytes) -> str:
    return fields.get(name, b"").decode(errors="replace")


def _decode(name: str, queue: str, fields: dict[bytes, bytes]) -> ScheduleRecord:
    every, last = _text(fields, b"every"), _text(fields, b"last")
    return ScheduleRecord(
        name=name,
        task_type=_text(fields, b"type"),
        queue=queue,
        payload=fields.get(b"payload", b"null"),
        encoding=Encoding.BYTES if fields.get(b"encoding") == b"bytes" else Encoding.JSON,
        options=_text(fields, b"options") or "{}",
        cron=_text(fields, b"cron") or None,
        every_us=int(every) if every.isdigit() else None,
        tz=_text(fields, b"tz") or "UTC",
        missed=_text(fields, b"missed") or "once",
        owner=_text(fields, b"owner") or None,
        revision=_text(fields, b"rev"),
        paused=fields.get(b"paused") == b"1",
        next_fire_at=int(_text(fields, b"next") or 0) / _US,
        last_fire_at=int(last) / _US if last.isdigit() else None,
        last_task_id=_text(fields, b"last_task") or None,
    )


def _definition(r: ScheduleRecord) -> str:
    fields = [
        r.task_type,
        r.encoding.value,
        r.options,
        r.cron or "",
        "" if r.every_us is None else str(r.every_us),
        r.tz,
        r.missed,
        r.owner or "",
    ]
    return json.dumps(fields, separators=(",", ":"))


class RedisSchedules(RedisScheduleWorkflows, RedisBrokerBase):
    """Mixin of :class:`~conveyor.brokers.redis.RedisBroker`: the schedule store."""

    def _entry_keys(self, queue: str, name: str) -> list[str]:
        validate_name(name, what="schedule name")
        return [schedule_record(self._ns, queue, name), schedule_due(self._ns, queue)]

    async def _queue_of(self, name: str) -> str | None:
        with self._errors():
            found = await self._client.hget(schedule_index(self._ns), name)
        return None if found is None else as_bytes(found).decode()

    async def _admin(self, queue: str, name: str, verb: str, revision: str, at: str = "") -> int:
        keys_ = self._entry_keys(queue, name)
        return int(await self._run("schedule_admin", keys_, [verb, name, revision, at]))

    async def schedule_clock(self) -> float:
        """The server's clock (``TIME``)."""
        with self._errors():
            seconds, micros = await self._client.time()
        return int(seconds) + int(micros) / _US

    async def put_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Insert or replace; an entry with the same definition is kept as it is."""
        paused = record.paused
        old_queue = await self._queue_of(record.name)
        if old_queue is not None and old_queue != record.queue:
            with contextlib.suppress(ScheduleNotFoundError):
                paused = (await self.get_schedule(record.name)).paused
            await self._admin(old_queue, record.name, "remove", "")
        with self._errors():  # the index first: a crash then leaves an entry naming nothing
            await self._client.hset(schedule_index(self._ns), record.name, record.queue)
        reply = await self._run(
            "schedule_put",
            self._entry_keys(record.queue, record.name),
            [
                record.name,
                _definition(record),
                record.payload,
                record.revision,
                _us(record.next_fire_at),
                "1" if paused else "0",
            ],
        )
        return _decode(record.name, record.queue, pairs(reply))

    async def get_schedule(self, name: str) -> ScheduleRecord:
        """One entry, or ``ScheduleNotFoundError``."""
        queue = await self._queue_of(name)
        if queue is not None:
            with self._errors():
                fields = await self._client.hgetall(schedule_record(self._ns, queue, name))
            if fields:
                return _decode(name, queue, {as_bytes(k): as_bytes(v) for k, v in fields.items()})
        raise ScheduleNotFoundError(name)

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every entry, by name (index entries naming no record are skipped)."""
        with self._errors():
            index = await self._client.hgetall(schedule_index(self._ns))
            entries = sorted((as_bytes(n).decode(), as_bytes(q).decode()) for n, q in index.items())
            pipe = self._client.pipeline(transaction=False)
            for name, queue in entries:
                pipe.hgetall(schedule_record(self._ns, queue, name))
            records = await pipe.execute() if entries else []
        return [
            _decode(name, queue, fields)
            for (name, queue), fields in zip(entries, records, strict=True)
            if fields
        ]

    async def remove_schedule(self, name: str, *, revision: str | None = None) -> bool:
        """Delete an entry (at ``revision`` only, when given)."""
        queue = await self._queue_of(name)
        if queue is None:
            return False
        done = await self._admin(queue, name, "remove", revision or "")
        if done != 0:  # removed, or the index named nothing: clear it
            with self._errors():
                await self._client.hdel(schedule_index(self._ns), name)
        return done == 1

    async def pause_schedule(self, name: str) -> None:
        """Mark an entry paused."""
        queue = await self._queue_of(name)
        if queue is None or await self._admin(queue, name, "pause", "") == -1:
            raise ScheduleNotFoundError(name)

    async def unpause_schedule(self, name: str, *, revision: str, next_fire_at: float) -> bool:
        """Unpause a paused entry at its revision, its cursor set to ``next_fire_at``."""
        queue = await self._queue_of(name)
        done = (
            -1
            if queue is None
            else await self._admin(queue, name, "unpause", revision, _us(next_fire_at))
        )
        if done == -1:
            raise ScheduleNotFoundError(name)
        return done == 1

    async def due_schedules(self, *, limit: int) -> DueSchedules:
        """Unpaused entries due by the server's clock, earliest first, and the next cursor.

        Also creates the workflows that fires of a scheduler that died left recorded and not
        created (see ``schedule_workflows.py``).
        """
        with self._errors():
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(schedule_index(self._ns))
            pipe.smembers(schedule_workflow_queues(self._ns))
            index, fired = await pipe.execute()
        # The values made a set before decoding: 10,000 entries are a few queues.
        entry_queues = {as_bytes(q).decode() for q in set(index.values())}
        fired_queues = {as_bytes(q).decode() for q in fired}
        queues = sorted(entry_queues | fired_queues)
        now = 0.0
        due: list[ScheduleRecord] = []
        upcoming: list[float] = []
        # One script per queue (each in its own slot on Cluster), sent at once: a round costs
        # one round trip however many queues hold entries.
        replies = await asyncio.gather(
            *(
                self._run(
                    "schedule_due",
                    [
                        schedule_due(self._ns, q),
                        schedule_prefix(self._ns, q),
                        *schedule_pending(self._ns, q),
                    ],
                    [max(limit, 0), _us(self._pending_grace_s), PENDING_BATCH],
                )
                for q in queues
            )
        )
        for queue, reply in zip(queues, replies, strict=True):
            now = max(now, int(reply[0]) / _US)
            if reply[1]:
                upcoming.append(float(reply[1]) / _US)
            if reply[2]:
                await self._finish_left_over(queue, reply[2])
            for entry in reply[3:]:
                name = as_bytes(entry[0]).decode()
                due.append(_decode(name, queue, pairs(entry[1:])))
        # A queue no entry names any more, with no workflow left to create: out of the set.
        for queue, reply in zip(queues, replies, strict=True):
            if queue in fired_queues and queue not in entry_queues and not reply[2]:
                await self._forget_workflow_queue(queue)
        if not queues:
            now = await self.schedule_clock()
        due.sort(key=lambda r: (r.next_fire_at, r.name))
        upcoming.extend(r.next_fire_at for r in due[limit:])
        return DueSchedules(now=now, due=due[:limit], next_at=min(upcoming, default=None))

    async def _forget_workflow_queue(self, queue: str) -> None:
        """Take ``queue`` out of the set of queues whose entries fired workflows when no entry
        of it exists and none of its workflows is pending, in one step (``schedule_forget.lua``).
        Not on Cluster, where the set, the index and the queue's records are in three slots:
        there the set keeps every queue an entry ever fired a workflow into."""
        if self._cluster:
            return
        await self._run(
            "schedule_forget",
            [
                schedule_index(self._ns),
                schedule_workflow_queues(self._ns),
                *schedule_pending(self._ns, queue),
            ],
            [queue],
        )

    async def fire_schedules(self, fires: Sequence[ScheduleFire]) -> list[FireOutcome]:
        """Apply each fire whose entry is unchanged: one script per queue and chunk; then create
        the workflows the applied fires recorded (see ``schedule_workflows.py``)."""
        by_queue: dict[str, list[int]] = {}
        for i, fire in enumerate(fires):
            by_queue.setdefault(fire.queue, []).append(i)
        firing = sorted({fire.queue for fire in fires if fire.workflows})
        if firing:  # before the fire: its pending records must be findable from the start
            with self._errors():
                await self._client.sadd(schedule_workflow_queues(self._ns), *firing)
        chunks = [
            (queue, indexes[first : first + _FIRES_PER_CALL])
            for queue, indexes in by_queue.items()
            for first in range(0, len(indexes), _FIRES_PER_CALL)
        ]
        # The queues' scripts are independent steps (one slot each): sent at once.
        results = await asyncio.gather(
            *(self._fire_chunk(queue, [fires[i] for i in chunk]) for queue, chunk in chunks)
        )
        outcomes: dict[int, FireOutcome] = {}
        for (_, chunk), result in zip(chunks, results, strict=True):
            outcomes.update(zip(chunk, result, strict=True))
        stored = [  # the queues that got tasks (a workflow fire's creation registers its own)
            q
            for q, indexes in by_queue.items()
            if any(outcomes[i].stored and not fires[i].workflows for i in indexes)
        ]
        if self._cluster and stored:
            await self._register(stored)
        if any(fire.workflows and outcomes[i].applied for i, fire in enumerate(fires)):
            crashpoint("after_schedule_fire")  # recorded, not yet created: the next step's case
        return [await self._create_fired(fires[i], outcomes[i]) for i in range(len(fires))]

    async def _create_fired(self, fire: ScheduleFire, outcome: FireOutcome) -> FireOutcome:
        """Create the workflows an applied fire recorded; its outcome lists those created (or
        left to a later round by a broker error), not those that existed already."""
        if not fire.workflows or not outcome.applied:
            return outcome
        created = []
        for workflow in fire.workflows:
            try:
                if await self._create_pending(fire.queue, workflow):
                    created.append(workflow.id)
            except ConveyorError as exc:
                # Fired all the same: its record stays, and a later round of any scheduler
                # creates it.
                created.append(workflow.id)
                logger.warning(
                    "schedule %s: workflow %s not created yet (%s); a later round will",
                    fire.name,
                    workflow.id,
                    exc,
                )
        return FireOutcome(applied=True, stored=tuple(created))

    async def _fire_chunk(self, queue: str, fires: Sequence[ScheduleFire]) -> list[FireOutcome]:
        keys_ = [
            *self._keys(queue).block,
            schedule_due(self._ns, queue),
            *schedule_pending(self._ns, queue),
        ]
        specs: list[list[Any]] = []
        messages: list[list[str | int]] = []
        payloads: list[bytes] = []
        workflow_ids: list[str] = []
        records: list[bytes] = []
        for n, fire in enumerate(fires, start=1):
            keys_.append(self._entry_keys(queue, fire.name)[0])
            at = "" if fire.fire_at is None else _us(fire.fire_at)
            specs.append(
                [n, fire.name, fire.revision, _us(fire.expected_next), _us(fire.next_fire_at),
                 at, len(fire.messages), len(fire.workflows)]
            )  # fmt: skip
            for m in fire.messages:
                if m.queue != queue:
                    raise ValueError(f"schedule {fire.name!r} fires into {m.queue!r}, not {queue}")
                messages.append(message_args(m, 1))
                payloads.append(m.payload)
            for w in fire.workflows:
                workflow_ids.append(w.id)
                records.append(pending_record(w))
        standalone = not self._cluster
        if standalone:
            keys_.append(registry(self._ns))
        args: list[Any] = [
            "1" if standalone else "0",
            json.dumps(specs, separators=(",", ":")),
            json.dumps(messages, separators=(",", ":")),
            json.dumps(workflow_ids, separators=(",", ":")),
            *payloads,
            *records,
        ]
        reply = await self._run("schedule_fire", keys_, args)
        return [
            FireOutcome(applied=bool(r[0]), stored=tuple(bytes(x).decode() for x in r[1:]))
            for r in reply[1:]
        ]
