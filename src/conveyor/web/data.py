"""What the pages and the JSON API show: plain JSON-ready dicts built from conveyor's types.

Pages and ``/api/`` use the same functions, so they show the same data. Nothing here escapes
HTML: the templates do (autoescape), and JSON needs none.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from conveyor.brokers.throughput import MinuteTotals
from conveyor.errors import ConveyorError, PayloadError
from conveyor.message import Encoding, QueueStats, TaskInfo, TaskState

PREVIEW_CHARS = 120
"""How much of a payload or error a task list shows: enough to recognise it, cheap to send."""

STATES: tuple[TaskState, ...] = (
    TaskState.PENDING,
    TaskState.SCHEDULED,
    TaskState.ACTIVE,
    TaskState.RETRY,
    TaskState.ARCHIVED,
    TaskState.COMPLETED,
)
"""States in the order a task moves through them: the queue page's tabs."""

Row = dict[str, Any]


def iso(value: datetime | None) -> str | None:
    """``value`` in ISO 8601, or ``None``."""
    return None if value is None else value.isoformat()


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def clip(text: str | None, limit: int = PREVIEW_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def payload_text(info: TaskInfo, *, indent: int | None) -> str:
    """The payload as text: JSON (pretty with ``indent``), else bytes shown as a Python literal.

    A stored payload that does not decode is shown as its raw text rather than failing the page.
    """
    if info.encoding is Encoding.BYTES:
        return repr(info.raw_payload)
    try:
        return json.dumps(info.payload, indent=indent, ensure_ascii=False, sort_keys=False)
    except (ConveyorError, ValueError):
        return info.raw_payload.decode(errors="replace")


def result_text(info: TaskInfo) -> str | None:
    """The result pretty-printed as JSON, or ``None`` when there is none."""
    if info.raw_result is None:
        return None
    try:
        return json.dumps(info.result, indent=2, ensure_ascii=False)
    except (ConveyorError, ValueError):
        return info.raw_result.decode(errors="replace")


def queue_row(stats: QueueStats) -> Row:
    """One queue's counts by state, size, paused flag and today's totals."""
    return {
        "queue": stats.queue,
        **{state.value: getattr(stats, state.value) for state in STATES},
        "size": stats.size,
        "paused": stats.paused,
        "processed_today": stats.processed_today,
        "failed_today": stats.failed_today,
    }


def minutes_rows(series: list[MinuteTotals]) -> list[Row]:
    """Per-minute totals, oldest first."""
    return [
        {"minute": m.minute.isoformat(), "processed": m.processed, "failed": m.failed}
        for m in series
    ]


def add_series(total: list[Row], series: list[Row]) -> list[Row]:
    """Minute-by-minute sum of two series of the same minutes (the overview's all-queues chart)."""
    if not total:
        return [dict(row) for row in series]
    for mine, theirs in zip(total, series, strict=False):
        mine["processed"] += theirs["processed"]
        mine["failed"] += theirs["failed"]
    return total


def task_row(info: TaskInfo) -> Row:
    """A task as a list shows it: type, payload preview, retries, last error, next run."""
    return {
        "id": info.id,
        "queue": info.queue,
        "type": info.type,
        "state": info.state.value,
        "payload_preview": clip(payload_text(info, indent=None)),
        "retried": info.retried,
        "max_retry": info.max_retry,
        "last_error": clip(info.last_error),
        "next_process_at": iso(info.next_process_at),
        "enqueued_at": iso(info.enqueued_at),
        "completed_at": iso(info.completed_at),
    }


def task_detail(info: TaskInfo) -> Row:
    """Everything stored about a task, payload and result pretty-printed."""
    return {
        **task_row(info),
        "payload": payload_text(info, indent=2),
        "encoding": info.encoding.value,
        "result": result_text(info),
        "last_error": info.last_error,
        "last_failed_at": iso(info.last_failed_at),
        "timeout_s": _seconds(info.timeout),
        "deadline": iso(info.deadline),
        "retention_s": _seconds(info.retention),
        "unique_key": info.unique_key,
        "headers": _headers(info),
    }


def _headers(info: TaskInfo) -> dict[str, str]:
    """The task's headers; empty when damaged (the page still shows the rest of the task)."""
    try:
        return dict(info.headers)
    except PayloadError:
        return {}
