"""Fuzz schedule definitions: cron expressions, intervals and time zones (conveyor.scheduling).

A schedule is written in code or through the inspector (``add_schedule``, possibly from an
admin form). Inputs are cron expressions built from real and hostile field values (steps of 0,
huge numbers, names, ``L``, ``#``, ``?``, hash syntax, stray characters), random text, hostile
intervals and zone names. Checks:

- ``FireSpec.parse`` returns or raises ``ConfigError`` (naming the bad part), nothing else;
- an accepted spec's ``next_after`` is a finite time strictly after its start, and
  ``last_at_or_before`` one at or before it (or ``None``); either may raise ``ConfigError``
  when the expression has no fire time in reach (croniter looks 50 years ahead).

Run: .venv/bin/python fuzz/fuzz_schedules.py -max_total_time=60
"""

from __future__ import annotations

import math
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _hostile import fuzz, provider

from conveyor.errors import ConfigError
from conveyor.scheduling.spec import FireSpec

parse_spec = FireSpec.parse  # the decoder under test (the negative control replaces it)

PARTS = ["*", "0", "59", "60", "61", "*/0", "*/7", "1-5", "5-1", "1-5/2", "mon", "MON-FRI",
         "jan", "L", "5L", "1#2", "?", "H", "H/5", "-1", "99999999999999999999", "1,2,3",
         ",", "", "*/", "a", "@hourly", "é", "\x00", "1.5", "0x1"]  # fmt: skip
ZONES = ["UTC", "Europe/Paris", "America/St_Johns", "Australia/Lord_Howe", "Asia/Kathmandu",
         "", "Nowhere/Land", "../etc/passwd", "Europe/Paris\x00", "utc", "Etc/GMT+14"]  # fmt: skip
EVERY = [0, 1, 0.999999, 1.0000001, 59, 86400, 10**12, 10**30, -1, float("nan"),
         float("inf"), timedelta(seconds=1), timedelta.max, timedelta(0), True, "5"]  # fmt: skip
STARTS = [0.0, 1e9, 1.8e9, 4.1e9, 1767225599.999999, 1774746000.0]


def _cron(fdp: Any) -> str:
    if fdp.ConsumeBool():
        return str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40)))
    count = fdp.ConsumeIntInRange(0, 8)
    return " ".join(fdp.PickValueInList(PARTS) for _ in range(count))


def test_one_input(data: bytes) -> None:
    fdp = provider(data)
    tz = fdp.PickValueInList(ZONES)
    try:
        if fdp.ConsumeBool():
            spec = parse_spec(cron=_cron(fdp), tz=tz)
        else:
            spec = parse_spec(every=fdp.PickValueInList(EVERY), tz=tz)
    except ConfigError:
        return
    start = fdp.PickValueInList(STARTS)
    try:
        after = spec.next_after(start)
        before = spec.last_at_or_before(start)
    except ConfigError:
        return
    assert math.isfinite(after) and after > start, (spec, start, after)
    assert before is None or (math.isfinite(before) and before <= start), (spec, start, before)


if __name__ == "__main__":
    fuzz(test_one_input)
