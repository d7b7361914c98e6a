"""Put tasks in every state through the broker protocol, as a worker would (no worker needed)."""

from __future__ import annotations

from typing import Any

from conveyor.brokers import open_broker
from conveyor.message import Completion, TaskMessage, TaskState, encode_json, new_task_id

HTML_PAYLOAD = {"note": "<script>window.__pwned = 1</script><b>bold?</b>", "n": 1}
HTML_ERROR = "ValueError: <img src=x onerror=alert(1)> & more"


def message(queue: str, payload: Any = None, **fields: Any) -> TaskMessage:
    """A message with a fresh id."""
    return TaskMessage(
        id=str(new_task_id()), type="demo.job", queue=queue, payload=encode_json(payload), **fields
    )


async def one_in_each_state(url: str, queue: str = "default") -> dict[TaskState, str]:
    """One task per state in ``queue`` (its ids by state); payloads and errors hold HTML."""
    broker = open_broker(url)
    try:
        ids: dict[TaskState, str] = {}
        first = [message(queue, HTML_PAYLOAD, max_retry=5, retention_s=3600) for _ in range(4)]
        await broker.enqueue(first)
        leases = await broker.claim([queue], limit=4, lease_s=600)
        assert await broker.complete([Completion(lease=leases[0], result=b'{"ok": "<i>"}')])
        ids[TaskState.COMPLETED] = leases[0].task.id
        await broker.retry(leases[1], error=HTML_ERROR, delay_s=3600)
        ids[TaskState.RETRY] = leases[1].task.id
        await broker.archive(leases[2], error=HTML_ERROR)
        ids[TaskState.ARCHIVED] = leases[2].task.id
        ids[TaskState.ACTIVE] = leases[3].task.id
        scheduled = message(queue, HTML_PAYLOAD, process_in_s=3600)
        pending = message(queue, HTML_PAYLOAD)
        await broker.enqueue([scheduled, pending])
        ids[TaskState.SCHEDULED], ids[TaskState.PENDING] = scheduled.id, pending.id
        return ids
    finally:
        await broker.close()
