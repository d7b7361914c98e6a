"""Property tests of the payload boundary: JSON in, the same JSON out; anything else refused.

Payloads are JSON values (or bytes). Whatever a caller passes, ``encode_payload`` either returns
bytes that decode back to an equal value, or raises ``PayloadError`` (a ``TypeError``) naming the
bad part; it never silently changes the value (a dict with an int key would come back with a
string key) and never raises anything else.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from conveyor.errors import PayloadError
from conveyor.message import Encoding, decode_payload, encode_payload

LIMIT = 1 << 20

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)

anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary()
    | st.sets(st.integers(), max_size=3)
    | st.tuples(st.integers()),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(st.text(), st.integers(), st.booleans(), st.none(), st.floats()),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_json_values_round_trip(value: object) -> None:
    data, encoding = encode_payload(value, limit=LIMIT)
    assert encoding is Encoding.JSON
    assert decode_payload(data, encoding) == value


@given(st.binary())
def test_bytes_pass_untouched(value: bytes) -> None:
    assert encode_payload(value, limit=LIMIT) == (value, Encoding.BYTES)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(anything)
def test_anything_else_is_refused_or_survives_unchanged(value: object) -> None:
    try:
        data, encoding = encode_payload(value, limit=LIMIT)
    except PayloadError:
        return
    if encoding is Encoding.BYTES:
        return
    assert _same(value, decode_payload(data, encoding)), (value, data)
