"""Click parameter types shared by the commands: durations, queue weights, log levels."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime, timedelta

import click

from conveyor.logs import JsonFormatter, TaskContextFilter, TextFormatter

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> timedelta:
    """Parse ``10s``, ``5m``, ``1h30m``, ``250ms`` or a bare number of seconds.

    Raises:
        ValueError: the text is not a duration.
    """
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(
                f"{text!r} is not a duration (examples: 30s, 5m, 1h30m, 250ms)"
            ) from None
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{text!r} is not a valid duration")
    return timedelta(seconds=seconds)


class Duration(click.ParamType[timedelta]):
    """A duration such as ``10s``, ``5m``, ``1h`` or ``2.5`` (seconds)."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class When(click.ParamType[datetime]):
    """An ISO 8601 datetime; without a timezone it is taken as UTC."""

    name = "iso-datetime"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO 8601 datetime (e.g. 2030-01-31T09:00:00Z)", param, ctx
            )
        return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_queues(values: tuple[str, ...]) -> dict[str, int] | None:
    """Turn ``("critical=6", "default")`` into ``{"critical": 6, "default": 1}``.

    Raises:
        click.BadParameter: a weight that is not a positive integer.
    """
    if not values:
        return None
    queues: dict[str, int] = {}
    for item in values:
        name, sep, weight = item.partition("=")
        if not sep:
            queues[name] = 1
            continue
        if not weight.isdigit() or int(weight) < 1:
            raise click.BadParameter(
                f"{item!r}: the weight must be a positive integer (e.g. critical=6)",
                param_hint="--queue",
            )
        queues[name] = int(weight)
    return queues


def debugging() -> bool:
    """Whether ``conveyor --debug`` was given (show tracebacks instead of one line)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def one_line(exc: BaseException) -> click.ClickException:
    """The CLI error for ``exc``: its message on one line, exit status 1."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return click.ClickException(text)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


LOG_FORMATS = ("text", "json")


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send every log record to stderr, as text or one JSON object per line.

    The library itself never adds handlers; the commands do. Records made while a task runs
    carry its id, type, queue and attempt (:class:`~conveyor.logs.TaskContextFilter`).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TaskContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    if log_format == "json":
        logging.captureWarnings(True)  # Python's warnings become JSON lines too
