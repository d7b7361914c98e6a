"""Parsing and formatting Faktory's Work Protocol (version 2): pure functions, no I/O.

Requests are ``VERB`` or ``VERB <argument>`` lines ending in CRLF; replies are RESP simple
strings, errors and bulk strings. A job's fields map onto a conveyor task as docs/server.md
describes (``args`` <-> payload, ``jobtype`` <-> type, ``reserve_for`` <-> timeout, ``retry``
<-> ``max_retry`` with Faktory's 0 and -1 kept apart). Bad input raises
:class:`~conveyor.errors.ProtocolError`, whose message is what the client is told; the fuzz
harness ``fuzz/fuzz_server_parsers.py`` checks nothing else escapes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from conveyor.errors import ConveyorError, PayloadError, ProtocolError
from conveyor.headers import encode_headers
from conveyor.message import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    NAME_PATTERN,
    Encoding,
    TaskInfo,
    TaskMessage,
    _new_task_message,
    decode_json,
    encode_payload,
)
from conveyor.server.masenko_wire import whole_number

DEFAULT_RETRY = 25
DEFAULT_RESERVE_S = 1800
DISCARD_ON_FAIL = -1
"""The ``max_retry`` of a job pushed with Faktory's ``retry: 0``: a failure discards it.

Faktory's ``retry: -1`` (dead at once) is stored as ``max_retry`` 0, which is what conveyor's
own "no retries" means, so a Python task with no retries is never discarded by a Faktory client.
"""

CUSTOM_HEADER = "faktory.custom"
"""The task header holding a job's ``custom`` object, as compact JSON (FETCH returns it)."""

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_COMPACT_JID = re.compile(r'\{"jid":"([A-Za-z0-9_.:-]{1,255})"\}')
"""An ACK argument as clients write it, read without the JSON parser (any other goes through it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """A parsed ``HELLO``."""

    wid: str | None
    pwdhash: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """A parsed ``FAIL``."""

    jid: str
    error: str
    """``errtype: message``, as stored for the task's last error."""


def split_command(line: bytes) -> tuple[str, str]:
    """The upper-cased verb and the argument text of a request line (CRLF or LF ended).

    Raises:
        ProtocolError: the line is not UTF-8.
    """
    try:
        text = line.decode()
    except UnicodeDecodeError:
        raise ProtocolError("commands must be UTF-8") from None
    verb, _, rest = text.rstrip("\r\n").partition(" ")
    return verb.upper(), rest.strip()


def ok() -> bytes:
    """``+OK``."""
    return b"+OK\r\n"


def simple(text: str) -> bytes:
    """A RESP simple string (no CR or LF inside)."""
    return b"+" + text.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


def error(message: str) -> bytes:
    """A RESP error line, ``-ERR <message>``."""
    return b"-ERR " + message.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


def bulk(data: bytes | None) -> bytes:
    """A RESP bulk string, or the null bulk string for ``None``."""
    if data is None:
        return b"$-1\r\n"
    return b"$%d\r\n%s\r\n" % (len(data), data)


def compact(value: object) -> bytes:
    """Compact JSON (no spaces: one Node client splits the HI line on spaces)."""
    return _compact(value).encode()


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(f"{what} is not valid JSON") from None


def _object(text: str, what: str) -> dict[str, Any]:
    value = _json(text, what)
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return value


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ProtocolError(f"invalid {what}: 1-255 characters from [A-Za-z0-9_.:-]")
    return value


def password_hash(password: str, salt: str, iterations: int) -> str:
    """The hex ``pwdhash``: sha256 of password + salt, applied ``iterations`` times."""
    digest = hashlib.sha256((password + salt).encode()).digest()
    for _ in range(iterations - 1):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def password_matches(password: str, salt: str, iterations: int, pwdhash: str | None) -> bool:
    """Whether ``pwdhash`` is the iterated hash, or the hash applied once (Python ``faktory``)."""
    if not isinstance(pwdhash, str):
        return False
    given = pwdhash.lower().encode()
    iterated = password_hash(password, salt, iterations).encode()
    once = password_hash(password, salt, 1).encode()
    # Both compared, always, in constant time: the answer must not leak which one matched.
    return hmac.compare_digest(given, iterated) | hmac.compare_digest(given, once)


def parse_hello(text: str) -> Hello:
    """Parse a ``HELLO`` argument.

    Raises:
        ProtocolError: not a JSON object, a version other than 2, a bad ``wid``.
    """
    obj = _object(text, "HELLO")
    if whole_number(obj.get("v", 2)) != 2:
        raise ProtocolError("only protocol version 2 is supported")
    wid = obj.get("wid")
    if wid is not None and (not isinstance(wid, str) or not 0 < len(wid) <= 255):
        raise ProtocolError("wid must be a string of 1-255 characters")
    pwdhash = obj.get("pwdhash")
    return Hello(wid=wid or None, pwdhash=pwdhash if isinstance(pwdhash, str) else None)


def parse_time(value: object, what: str) -> float | None:
    """An RFC 3339 time as seconds since the epoch; ``None`` or ``""`` mean none.

    Raises:
        ProtocolError: not a string, not a time, or without an offset.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ProtocolError(f"{what} must be an RFC 3339 time")
    try:
        when = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise ValueError("no offset")
        seconds = when.timestamp()
    except (ValueError, OverflowError):
        raise ProtocolError(f"{what} must be an RFC 3339 time with an offset") from None
    return seconds


def _retry(value: object) -> int:
    retry = whole_number(value)
    if retry is None or not -1 <= retry <= 1_000_000:
        raise ProtocolError("retry must be an integer from -1 up")
    if retry == 0:
        return DISCARD_ON_FAIL
    return 0 if retry == -1 else retry


def parse_job(obj: object) -> TaskMessage:
    """A Faktory job (a parsed JSON object) as a conveyor task message.

    Raises:
        ProtocolError: a missing or bad ``jid``, ``jobtype`` or ``args``, or a bad optional field.
    """
    if not isinstance(obj, dict):
        raise ProtocolError("a job must be a JSON object")
    jid = _name(obj.get("jid"), "jid")
    jobtype = _name(obj.get("jobtype"), "jobtype")
    args = obj.get("args")
    if not isinstance(args, list):
        raise ProtocolError("args must be an array")
    reserve = whole_number(obj.get("reserve_for") or DEFAULT_RESERVE_S)
    if reserve is None or not 1 <= reserve <= 365 * 86400:
        raise ProtocolError("reserve_for must be a positive integer (seconds)")
    priority = obj.get("priority")
    if priority is not None and whole_number(priority) is None:
        raise ProtocolError("priority must be an integer")
    custom = obj.get("custom")
    if custom is not None and not isinstance(custom, dict):
        raise ProtocolError("custom must be a JSON object")
    payload = _args_payload(args)  # checked in this order: the first bad field is reported
    headers = _custom_headers(custom)
    queue = _name(obj.get("queue") or "default", "queue")
    retry = _retry(obj.get("retry", DEFAULT_RETRY))
    at = parse_time(obj.get("at"), "at")
    # Positional, without the frozen dataclass's __init__ (one message per job pushed).
    return _new_task_message(
        jid, jobtype, queue, payload, Encoding.JSON, retry, float(reserve), None, 0.0, None,
        None, at, None, headers,
    )  # fmt: skip


def _args_payload(args: list[Any]) -> bytes:
    """``args`` as a stored JSON payload: what ``encode_payload`` stores, without its check for
    keys that are not strings (parsed JSON has none); its errors when the fast way fails."""
    try:
        payload = _compact(args).encode()
    except (ValueError, TypeError, RecursionError):  # NaN or Infinity: encode_payload says why
        payload = None
    if payload is None or len(payload) > DEFAULT_MAX_PAYLOAD_BYTES:
        try:
            payload, _ = encode_payload(args, limit=DEFAULT_MAX_PAYLOAD_BYTES)
        except ConveyorError as exc:
            raise ProtocolError(f"args: {exc}") from None
    return payload


def _custom_headers(custom: dict[str, Any] | None) -> bytes | None:
    """A job's ``custom`` as task headers (one header, its compact JSON); none when empty."""
    if not custom:
        return None
    try:
        return encode_headers({CUSTOM_HEADER: compact(custom).decode()})
    except (ConveyorError, ValueError, TypeError, RecursionError) as exc:  # too big, NaN
        raise ProtocolError(f"custom: {exc}") from None


def job_custom(info: TaskInfo) -> dict[str, Any] | None:
    """The ``custom`` object a job was pushed with, or ``None`` (none, or not readable)."""
    if info.raw_headers is None:
        return None
    try:
        value = json.loads(info.headers.get(CUSTOM_HEADER, "null"))
    except (ConveyorError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def parse_jid(text: str) -> str:
    """The ``jid`` of an ``ACK`` argument.

    Raises:
        ProtocolError: not a JSON object with a valid ``jid``.
    """
    compact = _COMPACT_JID.fullmatch(text)
    if compact is not None:
        return compact.group(1)
    return _name(_object(text, "ACK").get("jid"), "jid")


def parse_fail(text: str) -> Failure:
    """Parse a ``FAIL`` argument; the stored error is ``errtype: message`` (1,000 chars at most).

    Raises:
        ProtocolError: not a JSON object with a valid ``jid``.
    """
    obj = _object(text, "FAIL")
    jid = _name(obj.get("jid"), "jid")
    errtype, message = obj.get("errtype"), obj.get("message")
    parts = [str(p) for p in (errtype, message) if isinstance(p, str | int | float) and p != ""]
    return Failure(jid=jid, error=(": ".join(parts) or "failed")[:1000])


def parse_beat(text: str) -> str:
    """The ``wid`` of a ``BEAT`` argument.

    Raises:
        ProtocolError: not a JSON object with a ``wid`` string.
    """
    wid = _object(text, "BEAT").get("wid")
    if not isinstance(wid, str) or not wid:
        raise ProtocolError("BEAT needs a wid")
    return wid


def parse_batch(text: str) -> list[object]:
    """The jobs of a ``PUSHB`` argument (each still to be checked by :func:`parse_job`).

    Raises:
        ProtocolError: not a JSON array.
    """
    jobs = _json(text, "PUSHB")
    if not isinstance(jobs, list):
        raise ProtocolError("PUSHB takes a JSON array of jobs")
    return jobs


def parse_queues(text: str) -> list[str]:
    """The queues of a ``FETCH``, in order; none means ``default``.

    Raises:
        ProtocolError: a bad queue name.
    """
    names = text.split()
    return [_name(n, "queue") for n in names] if names else ["default"]


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    if when.tzinfo is not UTC:  # brokers give UTC times: no conversion needed
        when = when.astimezone(UTC)
    return when.isoformat().replace("+00:00", "Z")


def job_args(info: TaskInfo) -> list[Any]:
    """A task's payload as Faktory ``args``: a list as is, bytes as base64, else ``[payload]``."""
    if info.encoding is Encoding.BYTES:
        return [base64.b64encode(info.raw_payload).decode()]
    payload = info.payload
    return payload if isinstance(payload, list) else [payload]


def _args_json(info: TaskInfo) -> bytes:
    """:func:`job_args` as JSON: a stored JSON list is passed through as it is stored."""
    if info.encoding is Encoding.JSON:
        raw = info.raw_payload
        payload = _payload(raw)  # decoded all the same: damaged data must not reach a client
        # Stored compactly by conveyor, so the same bytes as re-encoding it (unless another
        # writer stored NaN or Infinity, which compact JSON refuses).
        if isinstance(payload, list) and b"NaN" not in raw and b"Infinity" not in raw:
            return raw
    return compact(job_args(info))


def _payload(raw: bytes) -> Any:
    """``decode_json(raw)``, decoding a list's UTF-8 directly (``json.loads`` on bytes first
    detects the encoding, which a ``[`` followed by a non-zero byte settles as UTF-8)."""
    if raw[:1] == b"[" and raw[1:2] != b"\x00":
        try:
            return json.loads(raw.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError) as exc:
            raise PayloadError(f"stored data is not valid JSON ({len(raw)} bytes)") from exc
    return decode_json(raw)


def _string(text: str) -> bytes:
    return encode_basestring(text).encode()


def job_json(info: TaskInfo) -> bytes:
    """A claimed task as the Faktory job a FETCH returns (compact JSON)."""
    retry = info.max_retry
    timeout = info.timeout.total_seconds() if info.timeout else DEFAULT_RESERVE_S
    enqueued = info.enqueued_at
    when = b"null" if enqueued is None else b'"%s"' % _iso(enqueued).encode()  # type: ignore[union-attr]
    job = b'{"jid":%s,"jobtype":%s,"args":%s,"queue":%s,"retry":%d,"reserve_for":%d' % (
        _string(info.id),
        _string(info.type),
        _args_json(info),
        _string(info.queue),
        0 if retry == DISCARD_ON_FAIL else (-1 if retry <= 0 else retry),
        max(1, math.ceil(timeout)),
    )
    job += b',"created_at":%s,"enqueued_at":%s' % (when, when)
    custom = job_custom(info)
    if custom is not None:
        job += b',"custom":' + compact(custom)
    if info.retried:
        failure = {
            "retry_count": info.retried - 1,
            "failed_at": _iso(info.last_failed_at),
            "message": info.last_error or "",
        }
        job += b',"failure":' + compact(failure)
    return job + b"}"
