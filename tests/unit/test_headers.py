"""conveyor.headers: encoding at the boundary, decoding of stored bytes, merging layers."""

from __future__ import annotations

import pytest

from conveyor.errors import HeadersError, PayloadError
from conveyor.headers import (
    EMPTY_HEADERS,
    MAX_HEADER_NAME_CHARS,
    decode_headers,
    encode_headers,
    merged_headers,
)


def test_empty_headers_encode_to_nothing_and_decode_to_the_shared_empty_mapping() -> None:
    assert encode_headers(None) is None and encode_headers({}) is None
    assert decode_headers(None) is EMPTY_HEADERS and decode_headers(b"") is EMPTY_HEADERS


def test_headers_round_trip_compactly_and_come_back_read_only() -> None:
    raw = encode_headers({"a": "1", "ü": "✓"})
    assert raw == '{"a":"1","ü":"✓"}'.encode()
    decoded = decode_headers(raw)
    assert dict(decoded) == {"a": "1", "ü": "✓"}
    with pytest.raises(TypeError):
        decoded["b"] = "2"  # type: ignore[index]


def test_a_name_at_the_limit_is_accepted_and_one_past_it_refused() -> None:
    assert encode_headers({"n" * MAX_HEADER_NAME_CHARS: ""}) is not None
    with pytest.raises(HeadersError, match="header name"):
        encode_headers({"n" * (MAX_HEADER_NAME_CHARS + 1): ""})


@pytest.mark.parametrize("stored", [b"not json", b"[1]", b'{"a":1}', b"\xff"])
def test_damaged_stored_headers_raise_payload_error(stored: bytes) -> None:
    with pytest.raises(PayloadError, match="stored headers"):
        decode_headers(stored)


def test_later_layers_win_and_all_empty_is_none() -> None:
    assert merged_headers(None, {}, None) is None
    assert merged_headers({"a": "1", "b": "1"}, None, {"b": "2"}) == {"a": "1", "b": "2"}
    with pytest.raises(HeadersError):
        merged_headers({"a": 1})  # type: ignore[dict-item]
