"""Translation between conveyor types and the Redis task record / script arguments.

A task record is a Redis hash (field names below). Times in it are server microseconds since the
epoch, except ``ready``, which is decimal seconds so an absolute ``process_at`` round-trips
exactly. Decoding is lenient: a damaged record still lists (claim archives it with a reason).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from conveyor.message import Encoding, TaskInfo, TaskMessage, TaskState, to_datetime

__all__ = ["decode_record", "enqueued_infos", "message_args", "pairs"]

_NO_TIME = timedelta(0)
_WAITING = (TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY)
_STATES = {s.value.encode(): s for s in TaskState}


def message_args(m: TaskMessage, block_index: int) -> list[str | int]:
    """The JSON-encoded fields of one message (layout in scripts/lib.lua); payload apart."""
    if m.process_at is not None:
        # Score rounded up to the microsecond so the task is never claimed early; the exact
        # value is kept for display.
        at = f"{math.ceil(m.process_at * 1_000_000)} {m.process_at!r}"
        delay = ""
    else:
        at = ""
        delay = "" if m.process_in_s is None else str(math.ceil(m.process_in_s * 1_000_000))
    return [
        block_index,
        m.id,
        m.type,
        m.encoding.value,
        str(m.max_retry),
        "" if m.timeout_s is None else repr(float(m.timeout_s)),
        "" if m.deadline is None else repr(float(m.deadline)),
        repr(float(m.retention_s)) if m.retention_s else "",
        m.unique_key or "",
        "" if m.unique_ttl_s is None else str(math.ceil(m.unique_ttl_s * 1000)),
        at,
        delay,
    ]


def enqueued_infos(
    messages: Sequence[TaskMessage], states: Sequence[bytes], now_us: int
) -> list[TaskInfo]:
    """The TaskInfos of messages just stored at server time ``now_us``, in order."""
    now = now_us / 1_000_000
    now_dt = to_datetime(now)
    infos = []
    for m, raw_state in zip(messages, states, strict=True):
        state = _STATES[raw_state]
        if state is TaskState.SCHEDULED:
            ready = m.process_at if m.process_at is not None else now + (m.process_in_s or 0.0)
            ready_dt = to_datetime(ready)
        else:
            ready_dt = now_dt
        infos.append(
            TaskInfo.from_message(m, state=state, enqueued_at=now_dt, next_process_at=ready_dt)
        )
    return infos


def _float(raw: bytes | None) -> float | None:
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _int(raw: bytes | None, default: int = 0) -> int:
    value = _float(raw)
    return default if value is None else int(value)


def _micros(raw: bytes | None) -> float | None:
    value = _float(raw)
    return None if value is None else value / 1_000_000


def _ready(state: TaskState, fields: dict[bytes, bytes]) -> datetime | None:
    """When a waiting task is ready: its ``ready`` field, else (fresh pending) its enqueue time."""
    if state not in _WAITING:
        return None
    ready = _float(fields.get(b"ready"))
    return to_datetime(ready if ready is not None else _micros(fields.get(b"enqueued_at")))


def decode_record(queue: str, task_id: str, fields: dict[bytes, bytes]) -> TaskInfo:
    """Build a TaskInfo from a task hash, tolerating missing or garbled fields."""
    state = _STATES.get(fields.get(b"state", b""), TaskState.ARCHIVED)
    encoding = Encoding.BYTES if fields.get(b"encoding") == b"bytes" else Encoding.JSON
    timeout = _float(fields.get(b"timeout"))
    ukey = fields.get(b"unique_key")
    return TaskInfo(
        id=task_id,
        queue=queue,
        type=fields.get(b"type", b"").decode(errors="replace"),
        state=state,
        raw_payload=fields.get(b"payload", b"null"),
        encoding=encoding,
        max_retry=_int(fields.get(b"max_retry")),
        retried=_int(fields.get(b"retried")),
        last_error=fields[b"error"].decode(errors="replace") if b"error" in fields else None,
        last_failed_at=to_datetime(_micros(fields.get(b"failed_at"))),
        timeout=None if timeout is None else timedelta(seconds=timeout),
        deadline=to_datetime(_float(fields.get(b"deadline"))),
        next_process_at=_ready(state, fields),
        enqueued_at=to_datetime(_micros(fields.get(b"enqueued_at"))),
        completed_at=to_datetime(_micros(fields.get(b"completed_at"))),
        raw_result=fields.get(b"result"),
        retention=timedelta(seconds=_float(fields.get(b"retention")) or 0.0),
        unique_key=ukey.decode() if ukey else None,
    )


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A dict from a flat ``[field, value, ...]`` reply (HGETALL inside a script)."""
    it = iter(flat)
    return dict(zip(it, it, strict=True))
