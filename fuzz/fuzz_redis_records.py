"""Fuzz the Redis broker's record decoding (records.py) and claim-reply decoding (replies.py).

A task record is a Redis hash anyone with access to the server can edit, so every field value
is untrusted bytes. Checks:

- ``decode_record`` never raises (its documented contract) on any dict of field -> bytes, with
  valid-looking and garbage values (huge numbers, 1e300, inf, nan, non-UTF-8, empty);
- the TaskInfo it builds has the declared types (``int`` counts, ``datetime``/``timedelta`` or
  None), and its ``payload``/``result`` raise only ``PayloadError``;
- ``float_field`` returns a finite float or None; ``pairs`` of an even list is a dict;
- ``claimed_leases`` on a well-formed claim.lua reply with hostile record values and ids never
  raises: an undecodable record is skipped (left to lease recovery), never its batch.

Run: .venv/bin/python fuzz/fuzz_redis_records.py -max_total_time=60
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _hostile import fuzz, hostile_bytes, hostile_json, provider

from conveyor.brokers.redis import records, replies
from conveyor.errors import PayloadError
from conveyor.message import Encoding, TaskInfo, TaskState

FIELDS = [
    *records.CLAIM_FIELDS,
    b"ready",
    b"completed_at",
    b"result",
    b"since",
    b"token",
    b"crashes",
    b"lease",
    b"bogus",
]
STATES = [s.value.encode() for s in TaskState]


def _value(fdp: object, name: bytes) -> bytes:
    pick = fdp.ConsumeIntInRange(0, 3)  # type: ignore[attr-defined]
    if pick == 0 and name == b"state":
        return bytes(fdp.PickValueInList(STATES))  # type: ignore[attr-defined]
    if pick == 0 and name == b"encoding":
        return bytes(fdp.PickValueInList([b"json", b"bytes", b"pickle"]))  # type: ignore[attr-defined]
    if name in (b"payload", b"result") and pick == 1:
        return hostile_json(fdp)
    return hostile_bytes(fdp)


def hostile_record(fdp: object) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    for _ in range(fdp.ConsumeIntInRange(0, 24)):  # type: ignore[attr-defined]
        name = fdp.PickValueInList(FIELDS)  # type: ignore[attr-defined]
        fields[name] = _value(fdp, name)
    return fields


def check_info(info: TaskInfo) -> None:
    assert isinstance(info.state, TaskState)
    assert isinstance(info.encoding, Encoding)
    assert type(info.max_retry) is int and type(info.retried) is int
    assert isinstance(info.type, str) and isinstance(info.raw_payload, bytes)
    for when in (info.last_failed_at, info.deadline, info.next_process_at, info.enqueued_at,
                 info.completed_at):  # fmt: skip
        assert when is None or isinstance(when, datetime)
    assert info.timeout is None or isinstance(info.timeout, timedelta)
    assert isinstance(info.retention, timedelta)
    assert info.last_error is None or isinstance(info.last_error, str)
    assert info.unique_key is None or isinstance(info.unique_key, str)
    for attr in ("payload", "result"):
        with contextlib.suppress(PayloadError):
            getattr(info, attr)


def test_one_input(data: bytes) -> None:
    fdp = provider(data)
    raw = hostile_bytes(fdp)
    number = records.float_field(raw)
    assert number is None or (type(number) is float and math.isfinite(number)), number

    fields = hostile_record(fdp)
    check_info(records.decode_record("q", "t", fields))

    flat = [x for pair in fields.items() for x in pair]
    assert records.pairs(flat) == fields

    # One claim.lua reply: [now, expires, [archived...], [qi, id, token, values]...].
    names = ["q1", "q2"]
    claimed = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        record = hostile_record(fdp)
        values = [record.get(f) for f in records.CLAIM_FIELDS]
        raw_id = hostile_bytes(fdp) if fdp.ConsumeBool() else b"id-1"
        claimed.append([fdp.ConsumeIntInRange(1, 2), raw_id, fdp.ConsumeIntInRange(1, 9), values])
    archived = [[1, hostile_bytes(fdp), hostile_bytes(fdp)]] if fdp.ConsumeBool() else []
    reply = [1_700_000_000_000_000, 1_700_000_030_000_000, archived, *claimed]
    for lease in replies.claimed_leases(names, reply):
        check_info(lease.task)


if __name__ == "__main__":
    logging.getLogger("conveyor").setLevel(logging.CRITICAL)  # corrupt records are logged
    fuzz(test_one_input)
