"""Log records that say which task they belong to, and a JSON formatter for log pipelines.

Every record made while a task runs, by conveyor or by the handler's own ``logging`` calls (async
handlers and sync handlers in the worker's threads alike), can carry the task's id, type, queue
and attempt: :class:`TaskContextFilter` reads them from the running task's context (a
``contextvars`` variable the worker sets for each attempt) and puts them on the record as
``task_id``, ``task_type``, ``queue`` and ``attempt``. Attach it to a *handler*, so it sees records
of every logger. The library itself adds no handler; ``conveyor worker`` does (``--log-format``).

Example::

    handler = logging.StreamHandler()
    handler.addFilter(TaskContextFilter())
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from conveyor.worker.context import context_or_none

__all__ = ["TASK_FIELDS", "JsonFormatter", "TaskContextFilter", "TextFormatter"]

TASK_FIELDS = ("task_id", "task_type", "queue", "attempt")
"""The record attributes :class:`TaskContextFilter` sets while a task runs."""


class TaskContextFilter(logging.Filter):
    """Adds the running task's ``task_id``, ``task_type``, ``queue`` and ``attempt`` to records.

    Outside a task it adds nothing, and it never replaces a value a record already carries (the
    worker's own records pass ``extra={"task_id": ...}``). It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = context_or_none()
        if ctx is not None:
            fields = record.__dict__
            fields.setdefault("task_id", ctx.task_id)
            fields.setdefault("task_type", ctx.type)
            fields.setdefault("queue", ctx.queue)
            fields.setdefault("attempt", ctx.retry_count + 1)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Keys: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, the task fields when the
    record has them, and ``exception`` (the formatted traceback) when there is one. Line breaks
    inside the message are escaped by JSON, so a record is always exactly one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in TASK_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``conveyor worker``'s text lines: time, level, logger, message, then the task if any.

    A record made while a task runs ends with ``[task <type> <id> queue=<queue> attempt=<n>]``.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)  # the traceback, if any, follows this
        task_id = record.__dict__.get("task_id")
        task_type = record.__dict__.get("task_type")
        if task_id is None or task_type is None:
            return text
        queue, attempt = record.__dict__.get("queue"), record.__dict__.get("attempt")
        return f"{text} [task {task_type} {task_id} queue={queue} attempt={attempt}]"
