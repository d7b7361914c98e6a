"""Claimed tasks are decoded straight from claim.lua's values: exactly as the record decoder
decodes the same fields, garbled or missing ones included."""

from __future__ import annotations

import itertools

import pytest

from conveyor.brokers.redis.records import (
    CLAIM_FIELDS,
    decode_claimed,
    decode_record,
    new_lease,
)
from conveyor.message import Lease

GOOD = {
    b"enqueued_at": b"1765000000123456",
    b"state": b"active",
    b"type": b"send_mail",
    b"payload": b"[1,2]",
    b"encoding": b"json",
    b"max_retry": b"25",
    b"retried": b"2",
    b"timeout": b"1800",
    b"deadline": b"1765000099.5",
    b"retention": b"3600",
    b"unique_key": b"k1",
    b"error": b"boom",
    b"failed_at": b"1765000000000001",
    b"headers": b"\x00h",
}
ODD = [None, b"", b"nan", b"1e300", b"-1e300", b"inf", b"\xff\xfe", b"bytes", b"pending", b"x"]


def _cases() -> list[list[bytes | None]]:
    cases = [[GOOD[f] for f in CLAIM_FIELDS]]
    for i, odd in itertools.product(range(len(CLAIM_FIELDS)), ODD):
        values: list[bytes | None] = [GOOD[f] for f in CLAIM_FIELDS]
        values[i] = odd
        cases.append(values)
    cases.append([None] * len(CLAIM_FIELDS))
    return cases


@pytest.mark.parametrize("values", _cases())
def test_decode_claimed_matches_decode_record(values: list[bytes | None]) -> None:
    # The record hash as a dict holds the fields claim.lua found (an absent one is None).
    fields = {name: v for name, v in zip(CLAIM_FIELDS, values, strict=True) if v is not None}
    expected = decode_record("q", "id1", fields)
    assert decode_claimed("q", "id1", values) == expected


def test_decode_claimed_refuses_a_wrong_count() -> None:
    with pytest.raises(ValueError):
        decode_claimed("q", "id1", [None] * (len(CLAIM_FIELDS) - 1))


def test_new_lease_equals_the_dataclass() -> None:
    info = decode_claimed("q", "id1", [GOOD[f] for f in CLAIM_FIELDS])
    assert new_lease(info, 7, 12.5) == Lease(task=info, token=7, expires_at=12.5)
