"""Fuzz the payload and result decoders of conveyor.message (and the worker's fast path).

Checks: ``decode_json``, ``decode_payload``, ``TaskInfo.payload`` / ``.result`` and the
executor's ``_decode`` raise nothing but ``PayloadError`` on any bytes; whatever decodes
re-encodes with ``encode_json`` or fails with ``PayloadError`` (NaN/Infinity are accepted on
the way in but not out).

Run: .venv/bin/python fuzz/fuzz_message.py -max_total_time=60
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _hostile import fuzz, hostile_json, provider

from conveyor.errors import PayloadError
from conveyor.message import (
    Encoding,
    TaskInfo,
    TaskState,
    decode_json,
    decode_payload,
    encode_json,
)
from conveyor.worker.attempt import fast_decode as _decode


def _decode_one(call: object, *args: object) -> tuple[bool, object]:
    try:
        return True, call(*args)  # type: ignore[operator]
    except PayloadError:
        return False, None


def test_one_input(data: bytes) -> None:
    fdp = provider(data)
    raw = hostile_json(fdp) if fdp.ConsumeBool() else bytes(fdp.ConsumeBytes(1 << 16))
    encoding = fdp.PickValueInList([Encoding.JSON, Encoding.BYTES])
    ok, value = _decode_one(decode_json, raw)
    _decode_one(decode_payload, raw, encoding)
    fast_ok, fast = _decode_one(_decode, raw, encoding)
    if encoding is Encoding.JSON and ok and fast_ok:
        # (Nesting near the recursion limit may decode on one path only: both are allowed.)
        assert repr(fast) == repr(value), raw[:80]
    info = TaskInfo(id="t", queue="q", type="x", state=TaskState.PENDING, raw_payload=raw,
                    encoding=encoding, raw_result=raw)  # fmt: skip
    _decode_one(lambda: info.payload)
    _decode_one(lambda: info.result)
    if ok:
        with contextlib.suppress(PayloadError):
            encode_json(value)


if __name__ == "__main__":
    fuzz(test_one_input)
