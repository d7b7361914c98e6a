"""Shared pieces of the fuzz harnesses: a data provider, hostile-value builders, the runner.

``provider(data)`` is ``atheris.FuzzedDataProvider`` when atheris is installed, else a small
pure-Python stand-in with the same method names, so the harnesses' check functions run (and
the unit tests exercise them) without atheris. ``fuzz(test_one_input)`` runs a harness under
atheris with the command line's libFuzzer flags; only it needs atheris installed.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable
from typing import Any

HUGE_NUMBERS = (
    "0",
    "-0",
    "1",
    "-1",
    "1e300",
    "-1e300",
    "1e308",
    "1e309",
    "inf",
    "-inf",
    "nan",
    "-nan",
    "Infinity",
    "NaN",
    "9" * 30,
    "-" + "9" * 30,
    "9" * 5000,
    "1" + "0" * 4301,
    "253402300800",
    "253402300800000000",
    "-62135596801",
    "-62135596801000000",
    "1_000",
    " 12 ",
    "0x10",
    "1e-320",
    "5e-324",
    "2147483648",
    "9223372036854775808",
    "-9223372036854775809",
    "1.5",
    "",
)

GARBAGE_BYTES = (
    b"",
    b"\xff\xfe\xfd",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\x00",
    b"null",
    b"\x80" * 8,
    "\u00e9\u2603".encode(),
)


class _Shim:
    """The FuzzedDataProvider methods the harnesses use, in plain Python."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    def remaining_bytes(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int) -> bytes:
        out = self._data[self._pos : self._pos + max(n, 0)]
        self._pos += len(out)
        return out

    def ConsumeBytes(self, count: int) -> bytes:
        return self._take(count)

    def ConsumeIntInRange(self, lo: int, hi: int) -> int:
        span = hi - lo
        if span <= 0:
            return lo
        raw = self._take((span.bit_length() + 7) // 8)
        return lo + int.from_bytes(raw.ljust(1, b"\0"), "little") % (span + 1)

    def ConsumeInt(self, size: int) -> int:
        raw = self._take(size)
        return int.from_bytes(raw, "little", signed=True) if raw else 0

    def ConsumeBool(self) -> bool:
        return bool(self.ConsumeIntInRange(0, 1))

    def ConsumeFloat(self) -> float:
        raw = self._take(8)
        if len(raw) < 8:
            return 0.0
        return float(struct.unpack("<d", raw)[0])

    def ConsumeUnicodeNoSurrogates(self, count: int) -> str:
        raw = self._take(count)
        return "".join(chr(b) if b < 0x80 else chr(0x80 + b * 37) for b in raw)

    def PickValueInList(self, values: list[Any]) -> Any:
        return values[self.ConsumeIntInRange(0, len(values) - 1)]


def provider(data: bytes) -> Any:
    """A data provider over ``data`` (atheris's when installed)."""
    try:
        import atheris
    except ImportError:
        return _Shim(data)
    return atheris.FuzzedDataProvider(data)


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    """Fuzz ``test_one_input`` with atheris, every loaded module instrumented; never returns."""
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def number_text(fdp: Any) -> str:
    """A number as text: a notable edge value, a random float, or a random integer."""
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return str(fdp.PickValueInList(list(HUGE_NUMBERS)))
    if kind == 1:
        value = fdp.ConsumeFloat()
        return repr(value) if math.isfinite(value) else str(value)
    if kind == 2:
        return str(fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 24)))
    return str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12)))


def hostile_bytes(fdp: Any) -> bytes:
    """Bytes that look like a stored value, or garbage (non-UTF-8, NUL, empty)."""
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return number_text(fdp).encode()
    if kind == 1:
        return bytes(fdp.PickValueInList(list(GARBAGE_BYTES)))
    if kind == 2:
        return bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32)))
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 32)).encode()


def hostile_json(fdp: Any) -> bytes:
    """JSON-looking bytes: deep nesting, huge numbers, NaN, bad escapes, or random bytes."""
    kind = fdp.ConsumeIntInRange(0, 5)
    if kind == 0:
        depth = fdp.ConsumeIntInRange(0, 200_000)
        opener = fdp.PickValueInList(["[", '{"a":'])
        closer = "]" if opener == "[" else "}"
        return (opener * depth + "1" + closer * depth).encode()
    if kind == 1:
        return number_text(fdp).encode()
    if kind == 2:
        return fdp.PickValueInList(
            [b'"\\ud800"', b'"\\u12"', b'{"a":1,"a":2}', b"[1,]", b'"\xff"', b"\xef\xbb\xbf1"]
        )
    if kind == 3:
        return bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
    if kind == 4:
        # UTF-16/32-looking input: json.loads sniffs the encoding of bytes from NUL positions.
        text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 16))
        codec = fdp.PickValueInList(["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
        return text.encode(codec)[: fdp.ConsumeIntInRange(0, 64)]
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64)).encode()
