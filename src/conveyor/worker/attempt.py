"""One attempt of a claimed task: its state, and the small helpers every part of it shares.

An :class:`Attempt` is what the executor holds while a task runs: its lease and context, the
asyncio task running it, where it is (:class:`Phase`) and why it was stopped from outside, if it
was (:class:`Interrupt`). The helpers here are pure: the stored error text, the time-limit error,
the fast payload decode and the ``extra`` dict of log records.
"""

from __future__ import annotations

import asyncio
import enum
import json
from dataclasses import dataclass

from conveyor.brokers.workflows import Continuation
from conveyor.message import Encoding, Lease, Payload, decode_payload
from conveyor.worker.context import TaskContext

# Stored error texts are for people reading the dead set; cap them so one huge message cannot
# bloat the broker.
_MAX_ERROR_CHARS = 4096


class Interrupt(enum.Enum):
    """Why an attempt was stopped from outside."""

    LEASE_LOST = "lease lost"
    SHUTDOWN = "shutdown"
    CANCELLED = "cancelled"  # the inspector's cancel_task: archived, never retried


CANCELLED_ERROR = "cancelled"
"""The error recorded on a task cancelled with ``cancel_task``."""


class Phase(enum.Enum):
    """Where an attempt is: before its handler, in it, or recording its outcome."""

    STARTING = "starting"
    RUNNING = "running"
    SETTLING = "settling"


@dataclass(slots=True, eq=False)
class Attempt:
    """One claimed task being processed."""

    lease: Lease
    ctx: TaskContext
    task: asyncio.Task[None] | None = None
    phase: Phase = Phase.STARTING
    interrupt: Interrupt | None = None
    timed_out: bool = False  # its time limit passed while the handler ran
    duration_s: float | None = None  # how long the handler ran, once it has returned
    continued: Continuation | None = None  # leased by the previous step's settlement
    # The continuation this attempt's settlement leased: (its key, its attempt), to run next.
    next: tuple[tuple[str, str, int], Attempt] | None = None


def error_text(exc: BaseException) -> str:
    """What is stored as a task's last error: the exception type name and its message."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the failure
        message = ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:_MAX_ERROR_CHARS]


def limit_error(limit: float, by_deadline: bool) -> TimeoutError:
    """The failure recorded for an attempt cut by its time limit (built only when one is)."""
    return TimeoutError("deadline exceeded" if by_deadline else f"task timed out after {limit:g}s")


_json_decode = json.JSONDecoder().decode


def fast_decode(raw: bytes, encoding: Encoding) -> Payload:
    """``decode_payload``, faster on the hot path: decoding str skips encoding sniffing."""
    if encoding is Encoding.BYTES:
        return raw
    try:
        return _json_decode(raw.decode())
    except (ValueError, RecursionError):
        return decode_payload(raw, encoding)  # raises the PayloadError with its usual message


def log_extra(lease: Lease) -> dict[str, str]:
    """The ``extra`` of a log record about ``lease``'s task."""
    return {"task_id": lease.task.id, "queue": lease.task.queue}
