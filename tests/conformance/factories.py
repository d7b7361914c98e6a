"""Builders for conformance tests: messages with fresh ids, and one-step enqueue/claim helpers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from conveyor.brokers.protocol import Broker
from conveyor.message import Completion, Lease, TaskInfo, TaskMessage, TaskState, encode_json

QUEUE = "default"
LONG_LEASE_S = 30.0


def new_id() -> str:
    """A fresh task id."""
    return uuid.uuid4().hex


def msg(**overrides: Any) -> TaskMessage:
    """A TaskMessage with a fresh id in the default queue; keyword arguments override fields.

    ``payload`` may be given as a JSON value; it is encoded unless it is already bytes.
    """
    fields: dict[str, Any] = {"id": new_id(), "type": "test:echo", "queue": QUEUE}
    fields.update(overrides)
    payload = fields.get("payload")
    if "payload" in fields and not isinstance(payload, bytes):
        fields["payload"] = encode_json(payload)
    return TaskMessage(**fields)


async def enqueue_one(broker: Broker, **overrides: Any) -> TaskInfo:
    """Enqueue one message built by :func:`msg` and return its TaskInfo."""
    [info] = await broker.enqueue([msg(**overrides)])
    return info


async def claim_one(broker: Broker, queue: str = QUEUE, *, lease_s: float = LONG_LEASE_S) -> Lease:
    """Claim exactly one task from ``queue`` (fails the test otherwise)."""
    leases = await broker.claim([queue], limit=1, lease_s=lease_s)
    assert len(leases) == 1, leases
    return leases[0]


async def claim_ids(broker: Broker, queues: list[str], *, limit: int = 100) -> list[str]:
    """Claim up to ``limit`` tasks and return their ids in claim order."""
    leases = await broker.claim(queues, limit=limit, lease_s=LONG_LEASE_S)
    return [lease.task.id for lease in leases]


async def state_of(broker: Broker, task_id: str, queue: str = QUEUE) -> str:
    """The task's current state."""
    return (await broker.get_task(queue, task_id)).state


def is_utc(value: datetime | None) -> bool:
    """True for an aware datetime with a zero UTC offset."""
    return (
        value is not None and value.tzinfo is not None and value.utcoffset() == UTC.utcoffset(value)
    )


async def broker_now(broker: Broker) -> float:
    """The broker's clock, read through the protocol: a claim with a zero lease expires "now".

    Uses its own queue (``clock-probe``) and leaves nothing behind there.
    """
    await enqueue_one(broker, queue="clock-probe")
    lease = await claim_one(broker, "clock-probe", lease_s=0)
    assert await broker.complete([Completion(lease=lease)]) == [True]
    return lease.expires_at


async def one_in_each_state(broker: Broker, *, active: bool = True) -> dict[TaskState, str]:
    """Put one task in every state (ACTIVE only if ``active``) into QUEUE; their ids by state."""
    ids: dict[TaskState, str] = {}
    claimed = (TaskState.ACTIVE,) if active else ()
    for state in (*claimed, TaskState.RETRY, TaskState.ARCHIVED, TaskState.COMPLETED):
        ids[state] = (await enqueue_one(broker, retention_s=600)).id
        lease = await claim_one(broker)
        if state is TaskState.RETRY:
            await broker.retry(lease, error="boom", delay_s=3600)
        elif state is TaskState.ARCHIVED:
            await broker.archive(lease, error="boom")
        elif state is TaskState.COMPLETED:
            assert await broker.complete([Completion(lease=lease)]) == [True]
    ids[TaskState.PENDING] = (await enqueue_one(broker)).id
    ids[TaskState.SCHEDULED] = (await enqueue_one(broker, process_in_s=3600)).id
    for state, task_id in ids.items():
        assert (await broker.get_task(QUEUE, task_id)).state is state
    return ids
