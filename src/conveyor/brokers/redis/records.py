"""Translation between conveyor types and the Redis task record / script arguments.

A task record is a Redis hash (field names below). Times in it are server microseconds since the
epoch, except ``ready``, which is decimal seconds so an absolute ``process_at`` round-trips
exactly. Decoding is lenient: a damaged record still lists (claim archives it with a reason).
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta

from conveyor.message import (
    Encoding,
    Lease,
    TaskInfo,
    TaskMessage,
    TaskState,
    _new_task_info,
    to_datetime,
)

__all__ = [
    "CLAIM_FIELDS",
    "decode_claimed",
    "decode_record",
    "enqueue_args",
    "enqueued_infos",
    "from_us",
    "message_args",
    "new_lease",
    "pairs",
    "shape_args",
]

_NO_TIME = timedelta(0)
_WAITING = (TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY)
_STATES = {s.value.encode(): s for s in TaskState}
_LETTERS = {ord("p"): TaskState.PENDING, ord("s"): TaskState.SCHEDULED}


def shape_args(m: TaskMessage, block_index: int) -> list[str | int]:
    """The fields of one message that a batch's messages usually share (layout in enqueue.lua)."""
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
        m.type,
        m.encoding.value,
        str(m.max_retry),
        "" if m.timeout_s is None else repr(float(m.timeout_s)),
        "" if m.deadline is None else repr(float(m.deadline)),
        repr(float(m.retention_s)) if m.retention_s else "",
        "" if m.unique_ttl_s is None else str(math.ceil(m.unique_ttl_s * 1000)),
        at,
        delay,
    ]


def message_args(m: TaskMessage, block_index: int) -> list[str | int]:
    """The JSON-encoded fields of one message (layout in scripts/lib.lua); payload apart."""
    shape = shape_args(m, block_index)
    return [shape[0], m.id, *shape[1:7], m.unique_key or "", *shape[7:]]


# What decides a message's shape: the fields of shape_args (the queue stands for its block).
_shape_key = operator.attrgetter(
    "queue",
    "type",
    "encoding",
    "max_retry",
    "timeout_s",
    "deadline",
    "retention_s",
    "unique_ttl_s",
    "process_at",
    "process_in_s",
)


# Shape key -> JSON of its shape_args after the block index. Producers reuse few shapes (one per
# task type and options), so most calls skip formatting and JSON encoding. Bounded by clearing.
_shape_json: dict[tuple[object, ...], str] = {}
_SHAPE_CACHE_SIZE = 1024


def _shape_tail(key: tuple[object, ...], m: TaskMessage) -> str:
    found = _shape_json.get(key)
    if found is None:
        if len(_shape_json) >= _SHAPE_CACHE_SIZE:
            _shape_json.clear()
        found = json.dumps(shape_args(m, 0)[1:], separators=(",", ":"))[1:-1]
        _shape_json[key] = found
    return found


def enqueue_args(
    messages: Sequence[TaskMessage], sizes: Sequence[int], block: Callable[[str], int]
) -> list[str | bytes]:
    """ARGV for enqueue.lua: shared fields once per shape, then ids, payloads and unique keys.

    Headers, when some message has any, follow as two more arguments (message indexes and
    lengths, then the bytes), so the usual batch without headers sends exactly what it did.

    ``block`` gives a queue's block index in KEYS (and adds the block on first use). Ids must
    already be valid names (no spaces: the heads are space-separated).
    """
    shapes: dict[tuple[object, ...], int] = {}
    encoded: list[str] = []
    heads: list[str] = []
    parts: list[bytes] = []
    with_headers = False
    for m in messages:
        if m.headers is not None:
            with_headers = True
        key = _shape_key(m)
        si = shapes.get(key)
        if si is None:
            si = shapes[key] = len(shapes) + 1
            encoded.append(f"[{block(m.queue)},{_shape_tail(key, m)}]")
        payload = m.payload
        parts.append(payload)
        if m.unique_key:
            ukey = m.unique_key.encode()
            parts.append(ukey)
            heads.append(f"{si} {m.id} {len(payload)} {len(ukey)}")
        else:
            heads.append(f"{si} {m.id} {len(payload)} 0")
    args: list[str | bytes] = [
        f"[{','.join(encoded)}]",
        f"[{','.join(map(str, sizes))}]",
        " ".join(heads),
        b"".join(parts),
    ]
    if with_headers:
        args.extend(_headers_args(messages))
    return args


def _headers_args(messages: Sequence[TaskMessage]) -> tuple[str, bytes]:
    """enqueue.lua's ARGV[5] and [6]: "<index> <length>" of each message with headers, then
    their headers concatenated (indexes count from 1, as Lua does)."""
    index: list[str] = []
    blobs: list[bytes] = []
    for i, m in enumerate(messages, 1):
        if m.headers is not None:
            index.append(f"{i} {len(m.headers)}")
            blobs.append(m.headers)
    return " ".join(index), b"".join(blobs)


def enqueued_infos(messages: Sequence[TaskMessage], states: bytes, now_us: int) -> list[TaskInfo]:
    """The TaskInfos of messages just stored at server time ``now_us``, in order.

    ``states`` has one letter per message, as enqueue.lua returns them (``p`` or ``s``).
    """
    now = now_us / 1_000_000
    now_dt = to_datetime(now)
    infos = []
    for m, raw_state in zip(messages, states, strict=True):
        state = _LETTERS[raw_state]
        if state is TaskState.SCHEDULED:
            ready = m.process_at if m.process_at is not None else now + (m.process_in_s or 0.0)
            ready_dt = to_datetime(ready)
        else:
            ready_dt = now_dt
        infos.append(
            TaskInfo.from_message(m, state=state, enqueued_at=now_dt, next_process_at=ready_dt)
        )
    return infos


def float_field(raw: bytes | None) -> float | None:
    """A stored number, or None when absent, garbled or not finite (a damaged field)."""
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _int(raw: bytes | None, default: int = 0) -> int:
    value = float_field(raw)
    return default if value is None else int(value)


def from_us(raw: bytes | int | str) -> datetime:
    """A server time in microseconds since the epoch (a script's reply or a stored field) as
    an aware UTC datetime."""
    return datetime.fromtimestamp(int(raw) / 1e6, UTC)


def _micros(raw: bytes | None) -> float | None:
    value = float_field(raw)
    return None if value is None else value / 1_000_000


def _time(seconds: float | None) -> datetime | None:
    """A datetime, or None when out of datetime's range (a damaged record, e.g. 1e300)."""
    try:
        return to_datetime(seconds)
    except (OverflowError, ValueError, OSError):
        return None


def _span(seconds: float | None) -> timedelta | None:
    """A timedelta, or None when absent or out of timedelta's range."""
    if seconds is None:
        return None
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        return None


def _ready(state: TaskState, fields: dict[bytes, bytes]) -> datetime | None:
    """When a waiting task is ready: its ``ready`` field, else (fresh pending) its enqueue time."""
    if state not in _WAITING:
        return None
    ready = float_field(fields.get(b"ready"))
    return _time(ready if ready is not None else _micros(fields.get(b"enqueued_at")))


def decode_record(queue: str, task_id: str, fields: dict[bytes, bytes]) -> TaskInfo:
    """Build a TaskInfo from a task hash, tolerating missing or garbled fields.

    Optional fields are parsed only when present (claimed tasks are decoded by
    :func:`decode_claimed` instead, from claim.lua's values).
    Values out of range decode as absent and bytes that are not UTF-8 as U+FFFD: this never
    raises (claim.lua archives such records before they are claimed; listing still shows them).
    """
    get = fields.get
    state = _STATES.get(get(b"state", b""), TaskState.ARCHIVED)
    timeout = _span(float_field(get(b"timeout")))
    retention = _span(float_field(get(b"retention")))
    error = get(b"error")
    ukey = get(b"unique_key")
    # Positional, in field order, without the dataclass __init__ (see message._new_task_info).
    return _new_task_info(
        task_id,
        queue,
        get(b"type", b"").decode(errors="replace"),
        state,
        get(b"payload", b"null"),
        Encoding.BYTES if get(b"encoding") == b"bytes" else Encoding.JSON,
        _int(get(b"max_retry")),
        _int(get(b"retried")),
        None if error is None else error.decode(errors="replace"),
        None if b"failed_at" not in fields else _time(_micros(get(b"failed_at"))),
        timeout,
        None if b"deadline" not in fields else _time(float_field(get(b"deadline"))),
        None if state is TaskState.ACTIVE else _ready(state, fields),
        _time(_micros(get(b"enqueued_at"))),
        None if b"completed_at" not in fields else _time(_micros(get(b"completed_at"))),
        get(b"result"),
        retention or _NO_TIME,
        ukey.decode(errors="replace") if ukey else None,
        get(b"headers"),
    )


CLAIM_FIELDS = (
    b"enqueued_at",
    b"state",
    b"type",
    b"payload",
    b"encoding",
    b"max_retry",
    b"retried",
    b"timeout",
    b"deadline",
    b"retention",
    b"unique_key",
    b"error",
    b"failed_at",
    b"headers",
)
"""The record fields claim.lua returns for each claimed task, in order (its CLAIM_FIELDS)."""
_CLAIM_N = len(CLAIM_FIELDS)


_NEW = object.__new__
_LEASE_SET = tuple(getattr(Lease, f.name).__set__ for f in fields(Lease))
# Stored timeout / retention text -> its timedelta: few distinct values (one per task type and
# options), so claims skip parsing them. Bounded by clearing.
_spans: dict[bytes | None, timedelta | None] = {}
_SPAN_CACHE_SIZE = 256


def _cached_span(raw: bytes | None) -> timedelta | None:
    try:
        return _spans[raw]
    except KeyError:
        if len(_spans) >= _SPAN_CACHE_SIZE:
            _spans.clear()
        found = _spans[raw] = _span(float_field(raw))
        return found


def decode_claimed(queue: str, task_id: str, values: Sequence[bytes | None]) -> TaskInfo:
    """:func:`decode_record` of ``claimed_fields(values)``, read straight from claim.lua's
    values (every claimed task goes through here: no dict in between).

    Raises:
        ValueError: not one value per field of ``CLAIM_FIELDS``.
    """
    if len(values) != _CLAIM_N:
        raise ValueError(f"{len(values)} claimed values for {_CLAIM_N} fields")
    (enqueued, raw_state, type_, payload, encoding, max_retry, retried, timeout, deadline,
     retention, ukey, error, failed_at, headers) = values  # fmt: skip
    state = _STATES.get(raw_state, TaskState.ARCHIVED)  # type: ignore[arg-type]
    enqueued_at = _time(_micros(enqueued))
    return _new_task_info(
        task_id,
        queue,
        "" if type_ is None else type_.decode(errors="replace"),
        state,
        b"null" if payload is None else payload,
        Encoding.BYTES if encoding == b"bytes" else Encoding.JSON,
        _int(max_retry),
        _int(retried),
        None if error is None else error.decode(errors="replace"),
        None if failed_at is None else _time(_micros(failed_at)),
        _cached_span(timeout),
        None if deadline is None else _time(float_field(deadline)),
        enqueued_at if state in _WAITING else None,  # no ready field: ready when enqueued
        enqueued_at,
        None,
        None,
        _cached_span(retention) or _NO_TIME,
        ukey.decode(errors="replace") if ukey else None,
        headers,
    )


def new_lease(task: TaskInfo, token: int, expires_at: float) -> Lease:
    """``Lease(task=task, token=token, expires_at=expires_at)`` without the dataclass
    ``__init__`` (one per claimed task; see message._new_task_info)."""
    obj: Lease = _NEW(Lease)
    set_task, set_token, set_expires = _LEASE_SET
    set_task(obj, task)
    set_token(obj, token)
    set_expires(obj, expires_at)
    return obj


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A dict from a flat ``[field, value, ...]`` reply (HGETALL inside a script)."""
    it = iter(flat)
    return dict(zip(it, it, strict=True))
