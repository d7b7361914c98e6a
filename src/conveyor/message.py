"""The shapes that cross the broker seam: task states, stored messages, task info, leases.

Payloads are JSON (or raw bytes); nothing here ever pickles or evaluates stored data.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import re
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NewType, TypeAlias

from conveyor.errors import InvalidNameError, PayloadError, PayloadTooLargeError
from conveyor.headers import decode_headers
from conveyor.progress import StepLog

if TYPE_CHECKING:
    from collections.abc import Mapping

JSONValue: TypeAlias = Any
"""A value ``json.dumps`` accepts: dict, list, str, int, float, bool or None (the only ``Any``)."""

Payload: TypeAlias = JSONValue | bytes
"""What a task carries: a JSON value, or raw bytes passed through untouched."""

TaskId = NewType("TaskId", str)

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
NAME_RULE = "1-255 characters from [A-Za-z0-9_.:-]"
DEFAULT_QUEUE = "default"
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
_NO_TIME = timedelta(0)


class TaskState(enum.StrEnum):
    """Where a task is in its lifecycle (see docs/concepts.md for the diagram)."""

    PENDING = "pending"
    """Ready to run; waits for a worker to claim it."""
    SCHEDULED = "scheduled"
    """Waits for its ``process_at`` time, then becomes pending."""
    ACTIVE = "active"
    """Claimed by a worker that holds a lease on it."""
    RETRY = "retry"
    """Failed; waits for its next attempt time, then becomes pending."""
    ARCHIVED = "archived"
    """Dead: out of retries, skipped, or unprocessable. Kept for inspection and manual re-runs."""
    COMPLETED = "completed"
    """Succeeded; kept with its result for the task's retention period."""


class Encoding(enum.StrEnum):
    """How a stored payload or result is encoded."""

    JSON = "json"
    BYTES = "bytes"


def validate_name(value: str, *, what: str) -> str:
    """Return ``value`` if it is a valid task type, queue name or task id.

    Raises:
        InvalidNameError: naming ``what`` and the rule, when ``value`` breaks it.
    """
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidNameError(f"invalid {what} {value!r}: must be {NAME_RULE}")
    return value


def new_task_id() -> TaskId:
    """A fresh task id: a UUIDv7-style string, the millisecond clock followed by 74 random bits.

    Ids that grow with time land next to each other in the broker's ``(queue, id)`` index, so an
    insert touches the same few pages instead of a random one (SQLite: ~10% faster single
    enqueues, and bulk enqueues that no longer slow down as the table grows). The random part
    keeps ids unique across processes and unguessable; ids stay opaque strings. Formatting the
    hex directly costs a quarter of building a ``uuid.UUID``.
    """
    h = f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
    return TaskId(f"{h[:8]}-{h[8:12]}-7{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}")


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # the 10xx variant bits


def _describe_bad_json(value: JSONValue, what: str) -> str:
    """Find the first value inside ``value`` that JSON cannot carry, for the error message."""
    stack: list[tuple[str, JSONValue]] = [(what, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return f"{path} has a non-string key {key!r}"
                stack.append((f"{path}[{key!r}]", sub))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", sub) for i, sub in enumerate(item))
        elif isinstance(item, float) and (item != item or abs(item) == float("inf")):
            return f"{path} is {item!r}, which JSON cannot represent"
        elif item is not None and not isinstance(item, str | int | float | bool):
            return f"{path} is a {type(item).__name__} ({item!r:.60}), which is not JSON"
    return f"{what} is not JSON-serialisable"


# Built once: ``json.dumps`` with non-default options builds a new encoder per call, which was a
# fifth of the cost of preparing a small task.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def encode_json(value: JSONValue, *, what: str = "payload") -> bytes:
    """Encode a JSON value compactly as UTF-8.

    Args:
        value: the value.
        what: what it is, for the error message ("payload", "result").

    Raises:
        PayloadError: naming the first value that is not JSON.
    """
    try:
        data = _encode_json(value).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadError(_describe_bad_json(value, what)) from exc
    if isinstance(value, dict | list | tuple) and not _keys_are_strings(value):
        raise PayloadError(_describe_bad_json(value, what))
    return data


def _keys_are_strings(value: JSONValue) -> bool:
    """Whether every dict key inside ``value`` is a str.

    The json module turns int, float, bool and None keys into strings without a word, so
    ``{1: "x"}`` would come back as ``{"1": "x"}``: a payload must not change on the way.
    """
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return False
                if isinstance(sub, dict | list | tuple):
                    stack.append(sub)
        elif isinstance(item, list | tuple):
            stack.extend(sub for sub in item if isinstance(sub, dict | list | tuple))
    return True


def decode_json(data: bytes) -> JSONValue:
    """Decode UTF-8 JSON bytes.

    Raises:
        PayloadError: when ``data`` is not valid JSON.
    """
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"stored data is not valid JSON ({len(data)} bytes)") from exc


def encode_payload(
    payload: Payload, *, limit: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> tuple[bytes, Encoding]:
    """Encode a payload for storage, enforcing the size cap.

    Raises:
        PayloadError: the payload is not JSON (and not bytes).
        PayloadTooLargeError: the encoded payload is over ``limit`` bytes.
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        data, encoding = bytes(payload), Encoding.BYTES
    else:
        data, encoding = encode_json(payload), Encoding.JSON
    if len(data) > limit:
        raise PayloadTooLargeError(size=len(data), limit=limit)
    return data, encoding


def decode_payload(data: bytes, encoding: Encoding) -> Payload:
    """Decode a stored payload (the inverse of :func:`encode_payload`)."""
    return data if encoding is Encoding.BYTES else decode_json(data)


def to_datetime(ts: float | None) -> datetime | None:
    """Convert a broker timestamp (seconds since the epoch) to an aware UTC datetime."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def to_timestamp(when: datetime) -> float:
    """Convert a datetime to seconds since the epoch; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of work: a type that selects the handler, and a JSON (or bytes) payload.

    ``headers`` is optional string metadata stored with the task (see :mod:`conveyor.headers`);
    the handler reads it as ``ctx.headers``.

    Example::

        task = Task("email:welcome", {"user_id": 42})
        client.enqueue(task, queue="critical")
    """

    type: str
    payload: Payload = None
    headers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        validate_name(self.type, what="task type")


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskMessage:
    """A task as handed to a broker for storage: everything fixed at enqueue time.

    Times are seconds since the epoch. ``process_at`` is absolute; ``process_in_s`` is relative
    to the broker's own clock, so producers' clocks never decide when a task runs.
    """

    id: str
    type: str
    queue: str = DEFAULT_QUEUE
    payload: bytes = b"null"
    encoding: Encoding = Encoding.JSON
    max_retry: int = 25
    timeout_s: float | None = None
    deadline: float | None = None
    retention_s: float = 0.0
    unique_key: str | None = None
    unique_ttl_s: float | None = None
    process_at: float | None = None
    process_in_s: float | None = None
    headers: bytes | None = None
    """The task's headers as compact JSON (``conveyor.headers.encode_headers``); None: none."""


@functools.lru_cache(maxsize=256)
def _duration(seconds: float) -> timedelta:
    # Tasks of one type share their timeout and retention: convert each value once.
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One failed attempt of a task, as kept in its retry history (``TaskInfo.history``).

    A broker records one in the same atomic step that moves the failed attempt to RETRY or
    ARCHIVED (a handler error, a time limit, a cancel, a lapsed lease); nothing is recorded
    for an attempt that succeeds. It keeps the last :data:`~conveyor.brokers.history.HISTORY_KEPT`
    (20) records of a task, and deletes them with the task.

    Attributes:
        attempt: which attempt failed, counting failed attempts from 1 (``TaskInfo.retried``
            just after it failed).
        failed_at: when it failed, by the broker's clock (aware UTC).
        error: the error recorded, cut to
            :data:`~conveyor.brokers.history.HISTORY_ERROR_CHARS` (512) characters.
    """

    attempt: int
    failed_at: datetime
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskInfo:
    """A snapshot of a stored task, as returned by enqueue and by the inspector.

    ``payload`` and ``result`` decode the stored bytes on access.
    """

    id: str
    queue: str
    type: str
    state: TaskState
    raw_payload: bytes = b"null"
    encoding: Encoding = Encoding.JSON
    max_retry: int = 25
    retried: int = 0
    last_error: str | None = None
    last_failed_at: datetime | None = None
    timeout: timedelta | None = None
    deadline: datetime | None = None
    next_process_at: datetime | None = None
    enqueued_at: datetime | None = None
    completed_at: datetime | None = None
    raw_result: bytes | None = None
    retention: timedelta = field(default=timedelta(0))
    unique_key: str | None = None
    result_log: tuple[StepLog, ...] = ()
    """A pipeline task's steps reached, in order (``Inspector.get_task`` fills it; else empty)."""
    raw_headers: bytes | None = None
    """The stored headers (compact JSON), or ``None`` when the task has none."""
    history: tuple[AttemptRecord, ...] = ()
    """The task's failed attempts, oldest first, the last 20 (``Inspector.get_task`` fills it;
    else empty)."""

    @classmethod
    def from_message(
        cls,
        m: TaskMessage,
        *,
        state: TaskState,
        enqueued_at: datetime | None,
        next_process_at: datetime | None,
        retried: int = 0,
        last_error: str | None = None,
        last_failed_at: datetime | None = None,
        completed_at: datetime | None = None,
        raw_result: bytes | None = None,
    ) -> TaskInfo:
        """Build the info of a stored message; every backend converts through this one place."""
        return _new_task_info(
            m.id,
            m.queue,
            m.type,
            state,
            m.payload,
            m.encoding,
            m.max_retry,
            retried,
            last_error,
            last_failed_at,
            None if m.timeout_s is None else _duration(m.timeout_s),
            None if m.deadline is None else datetime.fromtimestamp(m.deadline, UTC),
            next_process_at,
            enqueued_at,
            completed_at,
            raw_result,
            _NO_TIME if not m.retention_s else _duration(m.retention_s),
            m.unique_key,
            m.headers,
        )

    @property
    def payload(self) -> Payload:
        """The decoded payload (a JSON value, or bytes)."""
        return decode_payload(self.raw_payload, self.encoding)

    @property
    def result(self) -> JSONValue:
        """The handler's decoded result, or ``None`` when there is none (yet)."""
        return None if self.raw_result is None else decode_json(self.raw_result)

    @property
    def headers(self) -> Mapping[str, str]:
        """The task's headers, read-only (empty when it has none).

        Raises:
            PayloadError: the stored headers are damaged (not a JSON object of strings).
        """
        return decode_headers(self.raw_headers)

    @property
    def workflow_id(self) -> str | None:
        """The workflow this task is a step of (``Inspector.get_workflow`` it), else ``None``.

        Read from the task id, which a workflow gives each of its steps: no broker lookup.
        """
        # Imported here: conveyor.brokers imports this module.
        from conveyor.brokers.workflows import parse_step_task_id

        step = parse_step_task_id(self.id)
        return None if step is None else step[0]


# Building the objects made once per task (a message, its info) without the generated __init__:
# its keyword handling and per-field object.__setattr__ were about half their cost, measured.
# These set the slots directly, every field, in declaration order (tests compare them with
# __init__); the classes have no __post_init__ to skip.
_NEW = object.__new__
_TI = tuple(getattr(TaskInfo, f.name).__set__ for f in fields(TaskInfo))
_TM = tuple(getattr(TaskMessage, f.name).__set__ for f in fields(TaskMessage))


def _new_task_info(
    id: str, queue: str, type: str, state: TaskState, raw_payload: bytes, encoding: Encoding,
    max_retry: int, retried: int, last_error: str | None, last_failed_at: datetime | None,
    timeout: timedelta | None, deadline: datetime | None, next_process_at: datetime | None,
    enqueued_at: datetime | None, completed_at: datetime | None, raw_result: bytes | None,
    retention: timedelta, unique_key: str | None, raw_headers: bytes | None = None,
) -> TaskInfo:  # fmt: skip
    obj: TaskInfo = _NEW(TaskInfo)
    (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15, s16, s17, s18,
     s19, s20) = _TI  # fmt: skip
    s0(obj, id)
    s1(obj, queue)
    s2(obj, type)
    s3(obj, state)
    s4(obj, raw_payload)
    s5(obj, encoding)
    s6(obj, max_retry)
    s7(obj, retried)
    s8(obj, last_error)
    s9(obj, last_failed_at)
    s10(obj, timeout)
    s11(obj, deadline)
    s12(obj, next_process_at)
    s13(obj, enqueued_at)
    s14(obj, completed_at)
    s15(obj, raw_result)
    s16(obj, retention)
    s17(obj, unique_key)
    s18(obj, ())
    s19(obj, raw_headers)
    s20(obj, ())
    return obj


def _new_task_message(
    id: str, type: str, queue: str, payload: bytes, encoding: Encoding, max_retry: int,
    timeout_s: float | None, deadline: float | None, retention_s: float,
    unique_key: str | None, unique_ttl_s: float | None, process_at: float | None,
    process_in_s: float | None, headers: bytes | None = None,
) -> TaskMessage:  # fmt: skip
    """For conveyor.options, which builds one message per task: every field, in order."""
    obj: TaskMessage = _NEW(TaskMessage)
    (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13) = _TM
    s0(obj, id)
    s1(obj, type)
    s2(obj, queue)
    s3(obj, payload)
    s4(obj, encoding)
    s5(obj, max_retry)
    s6(obj, timeout_s)
    s7(obj, deadline)
    s8(obj, retention_s)
    s9(obj, unique_key)
    s10(obj, unique_ttl_s)
    s11(obj, process_at)
    s12(obj, process_in_s)
    s13(obj, headers)
    return obj


def step_message(message: TaskMessage, task_id: str) -> TaskMessage:
    """``message`` as a workflow's graph keeps it: under the step's task id, without headers
    or a unique key (the graph stores neither), at the cost of one constructor."""
    m = message
    return _new_task_message(
        task_id, m.type, m.queue, m.payload, m.encoding, m.max_retry, m.timeout_s, m.deadline,
        m.retention_s, None, None, m.process_at, m.process_in_s, None,
    )  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A worker's claim on an active task.

    ``token`` is a fencing token: every later transition of this attempt (complete, retry, archive,
    release, extend) must present it, and the broker refuses a stale one.
    """

    task: TaskInfo
    token: int
    expires_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """A successful attempt to record: the lease, its encoded result, and tasks to enqueue with it.

    ``successors`` are enqueued in the same atomic step as the completion (workflows rely on it).
    """

    lease: Lease
    result: bytes | None = None
    successors: tuple[TaskMessage, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats:
    """Counts for one queue, by state, plus today's processed/failed totals (UTC days)."""

    queue: str
    pending: int = 0
    scheduled: int = 0
    active: int = 0
    retry: int = 0
    archived: int = 0
    completed: int = 0
    paused: bool = False
    processed_today: int = 0
    failed_today: int = 0
    max_length: int | None = None
    """The queue's length limit (pending, scheduled and retry tasks); ``None``: unlimited."""

    @property
    def size(self) -> int:
        """Tasks in the queue that are not completed (pending to archived)."""
        return self.pending + self.scheduled + self.active + self.retry + self.archived
