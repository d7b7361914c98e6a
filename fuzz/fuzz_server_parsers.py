"""Fuzz ``conveyor server``'s request parsers: masenko's line protocol and Faktory's.

Inputs are request lines: a verb (real or not, any case) followed by a hostile body (deep
nesting, huge numbers, NaN, non-UTF-8, UTF-16-looking bytes, random bytes), or JSON objects
whose fields hold hostile values. Each line also goes through the server's line reader fed in
chunks split at random offsets. Checks:

- every parser returns or raises ``ProtocolError`` (its only documented error);
- what they accept is well formed: names follow the naming rule, a masenko payload fits its
  cap and is compact JSON, a FETCH timeout lies in (0, heartbeat], a Faktory job builds a
  ``TaskInfo`` whose FETCH reply (``job_json``) is JSON with the same jid, type and args;
- the line reader yields the lines as sent, or ``LineTooLongError`` for one over its cap.

Run: .venv/bin/python fuzz/fuzz_server_parsers.py -max_total_time=60
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from _hostile import fuzz, hostile_bytes, hostile_json, number_text, provider

from conveyor.errors import ProtocolError
from conveyor.message import NAME_PATTERN, TaskInfo, TaskState
from conveyor.server import faktory_wire, masenko_wire
from conveyor.server.connection import Connection, LineTooLongError

VERBS = ["PUSH", "push", "FETCH", "ACK", "NACK", "INFO", "PING", "ATOMIC", "DONE", "QUIT",
         "HELLO", "PUSHB", "FAIL", "BEAT", "END", "FLUSH", "\xff", ""]  # fmt: skip
FIELDS = ["name", "queue", "deadqueue", "payload", "retry", "execute_at", "queues", "timeout",
          "id", "jid", "jobtype", "args", "at", "reserve_for", "priority", "custom", "v",
          "wid", "pwdhash", "errtype", "message"]  # fmt: skip
STRINGS = ["", "default", "a b", "x" * 256, "2030-01-02T03:04:05Z", "2030-01-02T03:04:05",
           "0000-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "1.5s", "-1s", "1h2m3.5s",
           "9" * 400 + "s", "2.5", "µs", "\x00", "é"]  # fmt: skip
HEARTBEAT_S = 3.0
MAX_PAYLOAD = 512
MAX_LINE = 256


FAKTORY_PARSERS = (
    faktory_wire.parse_hello,
    faktory_wire.parse_jid,
    faktory_wire.parse_fail,
    faktory_wire.parse_beat,
    faktory_wire.parse_batch,
    faktory_wire.parse_queues,
)


def _value(fdp: Any, depth: int = 0) -> Any:
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 0:
        return fdp.PickValueInList(STRINGS)
    if kind == 1:
        text = number_text(fdp)
        try:
            return json.loads(text)
        except ValueError:
            return text
    if kind == 2:
        return fdp.PickValueInList([None, True, False, 0, -1, 2**32, 2**64, 1.5, float("nan")])
    if kind == 3 and depth < 3:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 4 and depth < 3:
        return {fdp.PickValueInList(FIELDS): _value(fdp, depth + 1) for _ in range(3)}
    if kind == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))
    return fdp.ConsumeIntInRange(-(2**40), 2**40)


def _body(fdp: Any) -> bytes:
    kind = fdp.ConsumeIntInRange(0, 2)
    if kind == 0:
        return hostile_json(fdp)
    if kind == 1:
        return hostile_bytes(fdp)
    obj = {fdp.PickValueInList(FIELDS): _value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 8))}
    return json.dumps(obj).encode()


def _check_masenko(line: bytes) -> None:
    verb, body = masenko_wire.split_request(line)
    assert isinstance(verb, str) and isinstance(body, bytes)
    try:
        push = masenko_wire.parse_push(body, max_payload_bytes=MAX_PAYLOAD)
        assert NAME_PATTERN.fullmatch(push.name) and NAME_PATTERN.fullmatch(push.queue)
        assert 0 <= push.retry <= 255
        if push.payload is not None:
            assert len(push.payload) <= MAX_PAYLOAD and b"\n" not in push.payload
            json.loads(push.payload)
    except ProtocolError:
        pass
    try:
        fetch = masenko_wire.parse_fetch(body, heartbeat_s=HEARTBEAT_S)
        assert 0 < fetch.timeout_s <= HEARTBEAT_S
        assert all(NAME_PATTERN.fullmatch(q) for q in fetch.queues)
    except ProtocolError:
        pass
    with contextlib.suppress(ProtocolError):
        assert 0 < masenko_wire.parse_id(body) < 2**32


def _check_faktory(line: bytes) -> None:
    try:
        _verb, arg = faktory_wire.split_command(line)
    except ProtocolError:
        return
    for parse in FAKTORY_PARSERS:
        with contextlib.suppress(ProtocolError):
            parse(arg)
    try:
        jobs = faktory_wire.parse_batch(arg)
    except ProtocolError:
        jobs = []
    with contextlib.suppress(ValueError, RecursionError):
        jobs.append(json.loads(arg))
    for job in jobs:
        try:
            message = faktory_wire.parse_job(job)
        except ProtocolError:
            continue
        info = TaskInfo.from_message(message, state=TaskState.ACTIVE, enqueued_at=None,
                                     next_process_at=None)  # fmt: skip
        back = json.loads(faktory_wire.job_json(info))
        assert (back["jid"], back["jobtype"], back["args"]) == (job["jid"], job["jobtype"],
                                                                 job["args"])  # fmt: skip


async def _read_lines(data: bytes, cuts: list[int]) -> list[bytes]:
    source = Connection(max_line_bytes=MAX_LINE)
    last = 0
    for cut in sorted(cuts):
        source.data_received(data[last:cut])
        last = cut
    source.data_received(data[last:])
    source.eof_received()
    lines = []
    while (line := await source.line(1.0)) is not None:
        lines.append(line)
    return lines


def _check_framing(data: bytes, cuts: list[int]) -> None:
    try:
        lines = asyncio.run(_read_lines(data, cuts))
    except LineTooLongError:
        assert any(len(part) > MAX_LINE for part in data.split(b"\n"))
        return
    assert b"".join(lines) == data[: data.rfind(b"\n") + 1]
    assert all(line.endswith(b"\n") and len(line) <= MAX_LINE + 1 for line in lines)


def test_one_input(data: bytes) -> None:
    fdp = provider(data)
    verb = fdp.PickValueInList(VERBS).encode()
    line = verb + b" " + _body(fdp) + fdp.PickValueInList([b"\n", b"\r\n", b""])
    _check_masenko(line)
    _check_faktory(line)
    cuts = [fdp.ConsumeIntInRange(0, len(line)) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    _check_framing(line + line[: fdp.ConsumeIntInRange(0, len(line))], cuts)


if __name__ == "__main__":
    fuzz(test_one_input)
