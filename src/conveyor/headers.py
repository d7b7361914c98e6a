"""Task headers: small string metadata that travels with a task, beside its payload.

Headers carry what is about a task rather than its input: a trace context (``traceparent``),
the request or tenant that caused it, the origin of a job pushed through ``conveyor server``.
They are set at enqueue (``Task(..., headers=...)`` or the ``headers=`` enqueue option), stored
with the task by every broker, kept through retries and recoveries, handed to the handler as
``ctx.headers`` and shown by the inspector.

They are stored as one compact JSON object, and only when there is at least one: a task without
headers stores and reads nothing more than before.

Example::

    client.enqueue(Task("report:build", {"id": 7}), headers={"tenant": "acme"})

    def build(ctx: TaskContext, task: Task) -> None:
        tenant = ctx.headers.get("tenant")
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType

from conveyor.errors import HeadersError, PayloadError

__all__ = [
    "EMPTY_HEADERS",
    "MAX_HEADERS",
    "MAX_HEADERS_BYTES",
    "MAX_HEADER_NAME_CHARS",
    "check_headers",
    "decode_headers",
    "encode_headers",
    "merged_headers",
]

MAX_HEADERS = 64
"""The most headers one task may carry."""

MAX_HEADER_NAME_CHARS = 256
"""The longest header name, in characters."""

MAX_HEADERS_BYTES = 8192
"""The cap on a task's headers encoded as compact JSON (UTF-8 bytes).

Headers are read on every claim of the task: they are for a few identifiers, not for data
(which belongs in the payload). 8 KiB holds a W3C trace context many times over.
"""

EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})
"""The headers of a task that has none (shared, read-only)."""

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def check_headers(headers: object) -> Mapping[str, str]:
    """Return ``headers`` if it is a mapping of str to str within the count and name rules.

    Raises:
        HeadersError: naming the first rule broken (the size is checked by encoding).
    """
    if not isinstance(headers, Mapping):
        raise HeadersError(f"headers must be a mapping of str to str, not {type(headers).__name__}")
    if len(headers) > MAX_HEADERS:
        raise HeadersError(f"a task may carry at most {MAX_HEADERS} headers, not {len(headers)}")
    for name, value in headers.items():
        if not isinstance(name, str) or not name or len(name) > MAX_HEADER_NAME_CHARS:
            raise HeadersError(
                f"header name {name!r} must be a str of 1 to {MAX_HEADER_NAME_CHARS} characters"
            )
        if not isinstance(value, str):
            raise HeadersError(f"header {name!r} must be a str, not {type(value).__name__}")
    return headers


def encode_headers(headers: Mapping[str, str] | None) -> bytes | None:
    """Check and encode headers for storage; ``None`` when there are none.

    Args:
        headers: header name to value, both strings.

    Returns:
        The compact JSON object as UTF-8, or ``None`` for ``None`` or an empty mapping.

    Raises:
        HeadersError: not a mapping of str to str, more than :data:`MAX_HEADERS` headers, a
            name empty or longer than :data:`MAX_HEADER_NAME_CHARS`, or an encoding over
            :data:`MAX_HEADERS_BYTES` bytes. Nothing is stored.
    """
    if headers is None:
        return None
    if not check_headers(headers):
        return None
    try:
        data = _encode(dict(headers)).encode()
    except UnicodeEncodeError as exc:  # a lone surrogate cannot be stored as UTF-8
        raise HeadersError(f"headers are not valid text: {exc.reason}") from None
    if len(data) > MAX_HEADERS_BYTES:
        raise HeadersError(
            f"headers are {len(data)} bytes as JSON, over the {MAX_HEADERS_BYTES}-byte limit"
        )
    return data


def decode_headers(raw: bytes | None) -> Mapping[str, str]:
    """The read-only headers of stored bytes (the inverse of :func:`encode_headers`).

    Raises:
        PayloadError: the stored bytes are not a JSON object of strings (a damaged record).
    """
    if not raw:
        return EMPTY_HEADERS
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise PayloadError(f"stored headers are not a JSON object of strings ({len(raw)} bytes)")
    return MappingProxyType(value)


def merged_headers(*layers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The union of header layers, later ones winning; ``None`` when all are empty."""
    out: dict[str, str] = {}
    for layer in layers:
        if layer:
            out.update(check_headers(layer))
    return out or None
