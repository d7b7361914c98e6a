"""Task options: what a producer may say about a task, validated once, turned into a TaskMessage.

Options come from three layers, later ones winning: the client's defaults, per-type defaults
(``set_default_options`` or the ``@app.task`` decorator) and the options of one call. Everything
is checked here, at the boundary, before anything is stored: an unknown option name is a
``TypeError`` naming it; a negative duration or a bad queue name is a ``ConfigError`` (a
``ValueError``).

Example::

    client.enqueue(Task("email:send", {"to": "a@b.c"}), queue="critical", timeout=60,
                   unique=timedelta(minutes=5))
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import TypedDict

from conveyor.errors import ConfigError
from conveyor.headers import check_headers, encode_headers, merged_headers
from conveyor.message import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_QUEUE,
    Task,
    TaskMessage,
    _new_task_message,
    encode_payload,
    new_task_id,
    to_datetime,
    to_timestamp,
    validate_name,
)

DEFAULT_MAX_RETRY = 25
"""Retries a failing task gets before it is archived, when no ``max_retry`` is given."""

DEFAULT_TIMEOUT = timedelta(minutes=30)
"""The timeout given to a task that has neither ``timeout`` nor ``deadline`` (asynq's choice).

A task with no limit at all could hold a worker slot forever after a hang; 30 minutes is long
enough for nearly any real job and short enough that a stuck one is noticed the same day.
"""

Duration = float | int | timedelta
"""A length of time: a ``timedelta``, or a number of seconds."""


class DefaultOptions(TypedDict, total=False):
    """Options that make sense as defaults for many tasks (client-wide or per task type)."""

    queue: str
    max_retry: int
    timeout: Duration
    unique: Duration
    retention: Duration


class EnqueueOptions(DefaultOptions, total=False):
    """Every option one enqueue call accepts (keyword arguments of ``enqueue``).

    Attributes:
        queue: queue name (default ``"default"``).
        max_retry: retries before the task is archived (default 25).
        timeout: limit for one attempt (seconds or ``timedelta``).
        deadline: absolute time after which the task must not run (aware ``datetime``;
            naive is taken as UTC).
        process_in: run no earlier than this long from now, by the broker's clock.
        process_at: run no earlier than this absolute time.
        task_id: a custom id; a live task with the same id is a ``TaskIdConflictError``.
        unique: uniqueness TTL; a duplicate (same type, payload and queue) enqueued within it is
            a ``DuplicateTaskError``.
        retention: keep the completed task and its result this long.
        headers: string metadata stored with the task (``ctx.headers`` in the handler); merged
            over the task's own ``headers``, these winning (see :mod:`conveyor.headers`).
    """

    deadline: datetime
    process_in: Duration
    process_at: datetime
    task_id: str
    headers: Mapping[str, str]


_DEFAULT_NAMES = frozenset(DefaultOptions.__annotations__)
_ENQUEUE_NAMES = frozenset(EnqueueOptions.__annotations__)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOptions:
    """A validated set of options; ``None`` means "not set here" so layers can be merged."""

    queue: str | None = None
    max_retry: int | None = None
    timeout: timedelta | None = None
    deadline: datetime | None = None
    process_in: timedelta | None = None
    process_at: datetime | None = None
    task_id: str | None = None
    unique: timedelta | None = None
    retention: timedelta | None = None
    headers: Mapping[str, str] | None = None

    def merged(self, over: TaskOptions) -> TaskOptions:
        """Return these options with every option set in ``over`` taking precedence."""
        changes = {n: v for n in _OPTION_NAMES if (v := getattr(over, n)) is not None}
        return replace(self, **changes) if changes else self


_OPTION_NAMES = tuple(f.name for f in fields(TaskOptions))
_MAX_INT64 = 2**63 - 1
# The longest duration whose float seconds convert back to a timedelta (a day short of max).
_MAX_DURATION = timedelta(days=999_999_998)
NO_OPTIONS = TaskOptions()


def _opt_duration(name: str, value: object, *, allow_zero: bool) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"option {name!r} must be a finite number of seconds, not {value!r}")
        try:
            result = timedelta(seconds=value)
        except OverflowError:
            raise ConfigError(f"option {name!r} is out of range: {value!r} seconds") from None
    else:
        raise TypeError(
            f"option {name!r} must be a number of seconds or a timedelta, "
            f"not {type(value).__name__}"
        )
    if result < timedelta(0) or (not allow_zero and result == timedelta(0)):
        rule = "zero or more" if allow_zero else "more than zero"
        raise ConfigError(f"option {name!r} must be {rule} seconds, not {value!r}")
    if result > _MAX_DURATION:  # brokers store seconds as floats: timedelta.max rounds up
        raise ConfigError(f"option {name!r} is out of range: {value!r}")
    return result


def _opt_datetime(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        try:  # brokers store seconds since the epoch: the time must come back from them
            to_datetime(to_timestamp(value))
        except (OverflowError, ValueError, OSError):
            raise ConfigError(f"option {name!r} is out of range: {value!r}") from None
        return value
    raise TypeError(f"option {name!r} must be a datetime, not {type(value).__name__}")


def _opt_name(name: str, value: object, *, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"option {name!r} must be a str, not {type(value).__name__}")
    return validate_name(value, what=what)


def _opt_max_retry(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"option 'max_retry' must be an int, not {type(value).__name__}")
    if value < 0:
        raise ConfigError(f"option 'max_retry' must be zero or more, not {value}")
    if value > _MAX_INT64:  # SQLite stores it as a 64-bit INTEGER
        raise ConfigError(f"option 'max_retry' must be at most {_MAX_INT64}, not {value}")
    return value


def parse_options(options: Mapping[str, object], *, defaults_only: bool = False) -> TaskOptions:
    """Validate keyword options into a :class:`TaskOptions`.

    Args:
        options: option name to value, as passed to ``enqueue`` (see :class:`EnqueueOptions`).
        defaults_only: accept only the options that can be defaults (:class:`DefaultOptions`).

    Raises:
        TypeError: an unknown option name, or a value of the wrong type.
        ConfigError: (a ``ValueError``) a negative duration, a bad queue name or task id, or
            both ``process_in`` and ``process_at``; a duration, time or ``max_retry`` out of
            the brokers' range (``1e300`` seconds, ``timedelta.max``, ``datetime.max``, 2**63).
    """
    allowed = _DEFAULT_NAMES if defaults_only else _ENQUEUE_NAMES
    unknown = sorted(set(options) - allowed)
    if unknown:
        where = "as a default" if defaults_only and set(unknown) <= _ENQUEUE_NAMES else ""
        raise TypeError(
            f"unknown task option {unknown[0]!r}{' ' + where if where else ''}; "
            f"valid options are: {', '.join(sorted(allowed))}"
        )
    get = options.get
    process_in = _opt_duration("process_in", get("process_in"), allow_zero=True)
    process_at = _opt_datetime("process_at", get("process_at"))
    if process_in is not None and process_at is not None:
        raise ConfigError("options 'process_in' and 'process_at' cannot be used together")
    return TaskOptions(
        queue=_opt_name("queue", get("queue"), what="queue name"),
        max_retry=_opt_max_retry(get("max_retry")),
        timeout=_opt_duration("timeout", get("timeout"), allow_zero=False),
        deadline=_opt_datetime("deadline", get("deadline")),
        process_in=process_in,
        process_at=process_at,
        task_id=_opt_name("task_id", get("task_id"), what="task id"),
        unique=_opt_duration("unique", get("unique"), allow_zero=False),
        retention=_opt_duration("retention", get("retention"), allow_zero=True),
        headers=_opt_headers(get("headers")),
    )


def _opt_headers(value: object) -> Mapping[str, str] | None:
    if value is None:
        return None
    headers = check_headers(value)
    encode_headers(headers)  # the size too: a HeadersError at the call, not at enqueue
    return headers


def unique_key(task_type: str, payload: bytes, queue: str) -> str:
    """A stable key for "the same task": a SHA-256 of type and payload bytes, scoped to the queue.

    Length-prefixing each part keeps the encoding injective (no two inputs share a key by
    concatenation accident).
    """
    digest = hashlib.sha256()
    for part in (queue.encode(), task_type.encode(), payload):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return f"{queue}:{digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """Merged options turned into message fields once, so each task costs only its own part.

    ``enqueue_many`` and repeated enqueues of one type reuse a template: per task, only the id,
    the payload bytes and (for unique tasks) the key are computed.
    """

    queue: str
    max_retry: int
    timeout_s: float | None
    deadline: float | None
    retention_s: float
    unique_ttl_s: float | None
    process_at: float | None
    process_in_s: float | None
    task_id: str | None
    headers: Mapping[str, str] | None = None

    @classmethod
    def from_options(cls, options: TaskOptions) -> MessageTemplate:
        """Apply the defaults (queue, ``max_retry``, :data:`DEFAULT_TIMEOUT`) and convert units."""
        timeout = options.timeout
        if timeout is None and options.deadline is None:
            timeout = DEFAULT_TIMEOUT
        return cls(
            queue=options.queue or DEFAULT_QUEUE,
            max_retry=DEFAULT_MAX_RETRY if options.max_retry is None else options.max_retry,
            timeout_s=None if timeout is None else timeout.total_seconds(),
            deadline=None if options.deadline is None else to_timestamp(options.deadline),
            retention_s=0.0 if options.retention is None else options.retention.total_seconds(),
            unique_ttl_s=None if options.unique is None else options.unique.total_seconds(),
            process_at=None if options.process_at is None else to_timestamp(options.process_at),
            process_in_s=(
                None if options.process_in is None else options.process_in.total_seconds()
            ),
            task_id=options.task_id,
            headers=options.headers or None,
        )

    def build(
        self, task: Task, max_payload_bytes: int, context: Mapping[str, str] | None = None
    ) -> TaskMessage:
        """The message for one task.

        ``context`` holds headers the producer adds on its own (a trace context); the task's
        headers, then the call's, are merged over them.

        Raises:
            PayloadError: the payload is not JSON (nor bytes); the message names the bad value.
            PayloadTooLargeError: the encoded payload is over ``max_payload_bytes``.
            HeadersError: the merged headers break a rule of :mod:`conveyor.headers`.
        """
        data, encoding = encode_payload(task.payload, limit=max_payload_bytes)
        headers = None
        if context or task.headers or self.headers:  # the usual task has none: nothing to do
            headers = encode_headers(merged_headers(context, task.headers, self.headers))
        # Every TaskMessage field, in declaration order: half the cost of TaskMessage(...).
        return _new_task_message(
            self.task_id or new_task_id(),
            task.type,
            self.queue,
            data,
            encoding,
            self.max_retry,
            self.timeout_s,
            self.deadline,
            self.retention_s,
            None if self.unique_ttl_s is None else unique_key(task.type, data, self.queue),
            self.unique_ttl_s,
            self.process_at,
            self.process_in_s,
            headers,
        )


def build_message(
    task: Task, options: TaskOptions, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> TaskMessage:
    """Turn a task and its merged options into the message a broker stores.

    Applies the defaults: queue ``"default"``, ``max_retry`` 25 and, when neither ``timeout``
    nor ``deadline`` is set, :data:`DEFAULT_TIMEOUT`.

    Raises:
        TypeError: ``task`` is not a :class:`~conveyor.message.Task`.
        PayloadError: the payload is not JSON (nor bytes); the message names the bad value.
        PayloadTooLargeError: the encoded payload is over ``max_payload_bytes``.
    """
    if not isinstance(task, Task):
        raise TypeError(f"expected a conveyor.Task, not {type(task).__name__}")
    return MessageTemplate.from_options(options).build(task, max_payload_bytes)
