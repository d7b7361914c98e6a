"""Parsing and formatting masenko's line protocol (pure functions, no I/O).

A request is ``VERB`` or ``VERB <json>``; a reply is ``OK|EMPTY|PONG|ERR <compact json>``.
Everything a client sends passes through here first, so bad input becomes a
:class:`~conveyor.errors.ProtocolError` whose message is what the client is told, and nothing
else escapes (the fuzz harness ``fuzz/fuzz_server_parsers.py`` checks it).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.errors import ProtocolError
from conveyor.message import NAME_PATTERN, JSONValue

DEFAULT_RETRY = 20
"""masenko's default ``retry``: a task runs at most ``retry + 1`` times."""

_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_GO_UNITS["h"] = 3600.0
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)", re.IGNORECASE)
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_COMPACT_ID = re.compile(rb'\{"id":(0|[1-9][0-9]{0,9})\}')
"""An ACK body as clients write it, read without the JSON parser (any other goes through it)."""

OK = b"OK {}\n"
"""``OK {}``, the reply of most requests."""
EMPTY = b"EMPTY {}\n"
"""``EMPTY {}``: a FETCH that found nothing."""
PONG = b"PONG {}\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class PushRequest:
    """A parsed ``PUSH`` body."""

    name: str
    queue: str
    deadqueue: str | None
    payload: bytes | None
    """The payload re-encoded compactly, or ``None`` when the push carried none."""
    retry: int
    execute_at: float | None
    """Seconds since the epoch (whole seconds, as masenko truncates), or ``None`` for now."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchRequest:
    """A parsed ``FETCH`` body."""

    queues: tuple[str, ...]
    timeout_s: float


_FETCHES: dict[tuple[bytes, float], FetchRequest] = {}
_FETCHES_KEPT = 1024  # distinct FETCH bodies remembered; a worker sends the same one each time
_FETCH_KEPT_BYTES = 512  # longer bodies are parsed each time


def split_request(line: bytes) -> tuple[str, bytes]:
    """Split a request line into its upper-cased verb and its (possibly empty) body.

    A trailing CR is dropped (an extension: the reference server would refuse ``PING\\r``).
    Bytes that are not UTF-8 in the verb are replaced, so an unknown verb can be named back.
    """
    line = line.rstrip(b"\n").removesuffix(b"\r")
    verb, _, body = line.partition(b" ")
    return verb.decode("utf-8", "replace").upper(), body.strip()


def reply(kind: str, body: JSONValue | None = None) -> bytes:
    """One reply line: ``kind`` and the compact JSON ``body`` (``{}`` when none)."""
    return f"{kind} {_compact({} if body is None else body)}\n".encode()


def error_reply(message: str) -> bytes:
    """An ``ERR {"msg": ...}`` line."""
    return reply("ERR", {"msg": message})


def loads(body: bytes) -> Any:
    """``json.loads(body)``, decoding the usual UTF-8 directly (the same result, and errors).

    ``json.loads`` on bytes detects the encoding first (a BOM, UTF-16 or -32 by their zero
    bytes); a body that starts with ``{`` and a non-zero byte is UTF-8 by that same rule.
    """
    if body[:1] == b"{" and body[1:2] != b"\x00":
        return json.loads(body.decode("utf-8", "surrogatepass"))
    return json.loads(body)


def _object(body: bytes, message: str) -> dict[str, Any]:
    try:
        value = loads(body) if body else {}
    except (ValueError, RecursionError):
        raise ProtocolError(message) from None
    if not isinstance(value, dict):
        raise ProtocolError(message)
    return value


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        shown = value if isinstance(value, str) else ""
        raise ProtocolError(f"invalid {what} name {_compact(shown[:300])}")
    return value


def parse_push(body: bytes, *, max_payload_bytes: int) -> PushRequest:
    """Parse a ``PUSH`` body.

    Raises:
        ProtocolError: bad JSON, a bad name, retry outside 0-255, a bad ``execute_at``, or a
            payload over ``max_payload_bytes`` once compacted.
    """
    obj = _object(body, "cannot unmarshal payload")
    name = _name(obj.get("name", ""), "task")
    queue = _name(obj.get("queue") or "default", "queue")
    deadqueue = obj.get("deadqueue") or None
    if deadqueue is not None:
        deadqueue = _name(deadqueue, "queue")
    retry = whole_number(obj.get("retry", DEFAULT_RETRY))
    if retry is None or not 0 <= retry <= 255:
        raise ProtocolError("cannot unmarshal payload: retry must be an integer from 0 to 255")
    payload = None
    if obj.get("payload") is not None:
        try:
            payload = _compact(obj["payload"]).encode()
        except (ValueError, RecursionError):
            raise ProtocolError("cannot unmarshal payload") from None
        if len(payload) > max_payload_bytes:
            raise ProtocolError(
                f"cannot push to queue: payload is {len(payload)} bytes, "
                f"over the {max_payload_bytes}-byte limit"
            )
    return PushRequest(
        name=name,
        queue=queue,
        deadqueue=deadqueue,
        payload=payload,
        retry=retry,
        execute_at=parse_time(obj.get("execute_at")),
    )


def parse_time(value: object) -> float | None:
    """An RFC 3339 time with an offset, truncated to whole seconds, or ``None`` when absent.

    Raises:
        ProtocolError: not a string, no offset (a naive ``datetime.isoformat()``), not a date.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ProtocolError(
            "cannot unmarshal payload: execute_at must be an RFC 3339 time with an offset, "
            'such as "2030-01-02T15:04:05Z"'
        )
    try:
        when = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        return float(math.floor(when.timestamp()))
    except (ValueError, OverflowError):
        raise ProtocolError("cannot unmarshal payload: execute_at is not a valid time") from None


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string such as ``"2.5s"``, ``"1m30s"``, ``"300ms"``.

    Raises:
        ProtocolError: not a Go duration.
    """
    sign, rest = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.removeprefix("+"))
    if rest == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _GO_DURATION.finditer(rest):
        number = match.group(1)
        if match.start() != pos or number in ("", "."):
            break
        total += float(number) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(rest) or not rest or not math.isfinite(total):
        raise ProtocolError("cannot unmarshal payload")
    return sign * total


def parse_fetch(body: bytes, *, heartbeat_s: float) -> FetchRequest:
    """Parse a ``FETCH`` body; ``timeout`` is nanoseconds (a number) or a Go duration string.

    A body parsed before is not parsed again (a worker sends the same FETCH each time).

    Raises:
        ProtocolError: bad JSON, a bad queue name, a timeout not in (0, heartbeat].
    """
    key = (body, heartbeat_s)
    known = _FETCHES.get(key)
    if known is None:
        known = _parse_fetch(body, heartbeat_s)
        if len(body) <= _FETCH_KEPT_BYTES:
            if len(_FETCHES) >= _FETCHES_KEPT:
                _FETCHES.clear()
            _FETCHES[key] = known
    return known


def _parse_fetch(body: bytes, heartbeat_s: float) -> FetchRequest:
    obj = _object(body, "cannot unmarshal payload")
    queues = obj.get("queues", ["default"])
    if queues is None:
        queues = ["default"]
    if not isinstance(queues, list):
        raise ProtocolError("cannot unmarshal payload")
    names = tuple(_name(q, "queue") for q in queues)
    timeout = obj.get("timeout")
    if timeout is None:
        timeout_s = heartbeat_s / 2
    elif isinstance(timeout, str):
        timeout_s = parse_go_duration(timeout)
    elif isinstance(timeout, int | float) and not isinstance(timeout, bool):
        timeout_s = timeout / 1e9
    else:
        raise ProtocolError("cannot unmarshal payload")
    if not timeout_s > 0:
        raise ProtocolError("timeout must be greater than zero")
    if timeout_s > heartbeat_s:
        raise ProtocolError(
            f"timeout must be smaller than the heartbeat frequency {heartbeat_s:g}s"
        )
    return FetchRequest(queues=names, timeout_s=timeout_s)


def parse_id(body: bytes) -> int:
    """The ``id`` of an ``ACK`` or ``NACK`` body.

    Raises:
        ProtocolError: bad JSON, or the id is missing, zero or not a uint32.
    """
    compact = _COMPACT_ID.fullmatch(body)
    if compact is not None:
        number = int(compact.group(1))
        if 0 < number < 2**32:
            return number
    try:
        obj = loads(body) if body else {}
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"unmarshal payload: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("unmarshal payload: not a JSON object")
    value = whole_number(obj.get("id", 0))
    if value is None or not 0 <= value < 2**32:
        raise ProtocolError("unmarshal payload: id must be an unsigned integer")
    if value == 0:
        raise ProtocolError("missing id")
    return value


def whole_number(value: object) -> int | None:
    """``value`` as an int when it is a JSON integer (``3`` or ``3.0``), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
