"""Fuzz task-option parsing at the client boundary (conveyor.options) and message building.

``enqueue(**options)`` takes a caller's dict, possibly built from untrusted input (a web form,
a job spec). Inputs are dicts of real and unknown option names with hostile values: huge and
non-finite floats, ints past 64 bits, bools, negative and extreme timedeltas, datetimes at the
ends of the calendar with odd UTC offsets, strings, bytes. Checks:

- ``parse_options`` returns or raises ``TypeError`` (unknown name, wrong type) or
  ``ConfigError``, its documented errors;
- the options that pass build a message (``MessageTemplate.from_options(...).build``) that
  raises only ``PayloadError``/``PayloadTooLargeError``, and that every broker can take: the
  Redis script arguments format, SQLite can bind its integers, and ``TaskInfo.from_message``
  (what the brokers return from enqueue) converts its times.

Run: .venv/bin/python fuzz/fuzz_options.py -max_total_time=60
"""

from __future__ import annotations

import sqlite3
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _hostile import fuzz, provider

from conveyor.brokers.redis import records
from conveyor.errors import ConfigError, PayloadError, PayloadTooLargeError
from conveyor.message import Task, TaskInfo, TaskState
from conveyor.options import MessageTemplate, parse_options

NAMES = ["queue", "max_retry", "timeout", "unique", "retention", "deadline", "process_in",
         "process_at", "task_id", "bogus"]  # fmt: skip
FLOATS = [0.0, -0.0, 1e-9, 0.5, 1.0, -1.0, 1e9, 1e15, 1e18, 1e300, -1e300, float("inf"),
          float("-inf"), float("nan"), 86400.0 * 999999999, 86400.0 * 1e9]  # fmt: skip
INTS = [0, 1, -1, 25, 2**31, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1, True, False]
DELTAS = [timedelta(0), timedelta(microseconds=1), timedelta(days=1), timedelta.max,
          timedelta.min, -timedelta(microseconds=1), timedelta(days=999999998)]  # fmt: skip
NAME_STRINGS = ["default", "q", "", " ", "a" * 255, "a" * 256, "a\nb", "é", "x:y.z-1_2"]

BASE_TIMES = [datetime.min, datetime.max, datetime(1970, 1, 1), datetime(2030, 1, 1),
              datetime(1, 1, 2), datetime(9999, 12, 30)]  # fmt: skip

_sqlite = sqlite3.connect(":memory:")


def _datetime(fdp: Any) -> datetime:
    base = fdp.PickValueInList(BASE_TIMES)
    kind = fdp.ConsumeIntInRange(0, 2)
    if kind == 0:
        return base  # naive: taken as UTC
    if kind == 1:
        return base.replace(tzinfo=UTC)
    minutes = fdp.ConsumeIntInRange(-(24 * 60 - 1), 24 * 60 - 1)
    return base.replace(tzinfo=timezone(timedelta(minutes=minutes)))


def _value(fdp: Any) -> object:
    kind = fdp.ConsumeIntInRange(0, 8)
    if kind == 0:
        return fdp.PickValueInList(FLOATS)
    if kind == 1:
        return fdp.ConsumeFloat()
    if kind == 2:
        return fdp.PickValueInList(INTS)
    if kind == 3:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 12))
    if kind == 4:
        return fdp.PickValueInList(DELTAS)
    if kind == 5:
        return timedelta(microseconds=fdp.ConsumeIntInRange(-(10**14), 10**17))
    if kind == 6:
        return _datetime(fdp)
    if kind == 7:
        return fdp.PickValueInList(NAME_STRINGS)
    return fdp.PickValueInList([None, b"1", "1", [], {}, object()])


def _check_message(template: MessageTemplate, payload: object) -> None:
    try:
        message = template.build(Task("fuzz.task", payload), 1 << 16)
    except (PayloadError, PayloadTooLargeError):
        return
    records.message_args(message, 1)
    records.enqueue_args([message], [1], lambda _queue: 1)
    _sqlite.execute("SELECT ?, ?", (message.max_retry, 0)).fetchone()  # SQLite INTEGER range
    now = datetime(2030, 1, 1, tzinfo=UTC)
    TaskInfo.from_message(message, state=TaskState.PENDING, enqueued_at=now, next_process_at=now)


def test_one_input(data: bytes) -> None:
    fdp = provider(data)
    options = {fdp.PickValueInList(NAMES): _value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 5))}
    defaults_only = fdp.ConsumeBool()
    try:
        parsed = parse_options(options, defaults_only=defaults_only)
    except (TypeError, ConfigError):
        return
    payload = fdp.PickValueInList([None, 1, "x", b"\xff", {"a": [1.5]}, float("nan"), {1: 2}])
    _check_message(MessageTemplate.from_options(parsed), payload)


if __name__ == "__main__":
    fuzz(test_one_input)
