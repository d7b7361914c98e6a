"""Hypothesis fuzzing of both request parsers: only ProtocolError escapes; accepted is valid.

Each property runs ``CONVEYOR_SERVER_FUZZ_EXAMPLES`` examples (default 100, so the suite stays
fast); the full run is ``CONVEYOR_SERVER_FUZZ_EXAMPLES=2500`` (6 properties: 15,000 inputs).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.errors import ProtocolError
from conveyor.message import NAME_PATTERN, TaskInfo, TaskState
from conveyor.server import faktory_wire, masenko_wire

EXAMPLES = int(os.environ.get("CONVEYOR_SERVER_FUZZ_EXAMPLES", "100"))
fuzz_settings = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

FIELDS = ["name", "queue", "deadqueue", "payload", "retry", "execute_at", "queues", "timeout",
          "id", "jid", "jobtype", "args", "at", "reserve_for", "priority", "custom", "v", "wid",
          "pwdhash", "errtype", "message"]  # fmt: skip
texts = st.one_of(
    st.sampled_from(["", "default", "q-1", "a b", "2030-01-02T03:04:05Z", "2030-01-02T03:04:05",
                     "0000-01-01T00:00:00Z", "1.5s", "-2s", "300ms", "1h2m", "9" * 400 + "s"]),
    st.text(max_size=30),
)  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), texts,
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)


FAKTORY_PARSERS = (
    faktory_wire.parse_hello,
    faktory_wire.parse_jid,
    faktory_wire.parse_fail,
    faktory_wire.parse_beat,
    faktory_wire.parse_batch,
    faktory_wire.parse_queues,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _masenko(body: bytes) -> None:
    for parse in (
        lambda b: masenko_wire.parse_push(b, max_payload_bytes=1024),
        lambda b: masenko_wire.parse_fetch(b, heartbeat_s=3.0),
        masenko_wire.parse_id,
    ):
        with contextlib.suppress(ProtocolError):
            parse(body)


@fuzz_settings
@given(st.binary(max_size=200))
def test_masenko_parsers_take_any_bytes(data: bytes) -> None:
    verb, body = masenko_wire.split_request(data)
    assert isinstance(verb, str)
    _masenko(body)


@fuzz_settings
@given(objects)
def test_masenko_accepts_only_valid_pushes_and_fetches(obj: dict[str, Any]) -> None:
    body = _dumps(obj)
    try:
        push = masenko_wire.parse_push(body, max_payload_bytes=1024)
    except ProtocolError:
        pass
    else:
        assert NAME_PATTERN.fullmatch(push.name) and 0 <= push.retry <= 255
        assert push.payload is None or len(push.payload) <= 1024
    try:
        fetch = masenko_wire.parse_fetch(body, heartbeat_s=3.0)
    except ProtocolError:
        pass
    else:
        assert 0 < fetch.timeout_s <= 3.0
    _masenko(body)


@fuzz_settings
@given(st.binary(max_size=200))
def test_faktory_parsers_take_any_bytes(data: bytes) -> None:
    try:
        _verb, arg = faktory_wire.split_command(data)
    except ProtocolError:
        return
    _faktory(arg)


def _faktory(arg: str) -> None:
    for parse in FAKTORY_PARSERS:
        with contextlib.suppress(ProtocolError):
            parse(arg)


@fuzz_settings
@given(objects | json_values)
def test_faktory_jobs_are_refused_or_round_trip(value: Any) -> None:
    _faktory(_dumps(value).decode())
    try:
        message = faktory_wire.parse_job(value)
    except ProtocolError:
        return
    info = TaskInfo.from_message(message, state=TaskState.ACTIVE, enqueued_at=None,
                                 next_process_at=None)  # fmt: skip
    back = json.loads(faktory_wire.job_json(info))
    assert (back["jid"], back["jobtype"], back["args"]) == (
        value["jid"], value["jobtype"], value["args"],
    )  # fmt: skip


@fuzz_settings
@given(st.lists(objects, max_size=5))
def test_faktory_batches_are_checked_job_by_job(jobs: list[dict[str, Any]]) -> None:
    for job in faktory_wire.parse_batch(_dumps(jobs).decode()):
        with contextlib.suppress(ProtocolError):
            faktory_wire.parse_job(job)


@fuzz_settings
@given(st.text(max_size=40), st.text(max_size=16), st.integers(1, 50), st.text(max_size=70))
def test_only_the_right_password_hash_matches(
    password: str, salt: str, iterations: int, guess: str
) -> None:
    right = faktory_wire.password_hash(password, salt, iterations)
    assert faktory_wire.password_matches(password, salt, iterations, right)
    assert faktory_wire.password_matches(password, salt, iterations, right.upper())
    assert faktory_wire.password_matches(password, salt, iterations,
                                         faktory_wire.password_hash(password, salt, 1))  # fmt: skip
    once = faktory_wire.password_hash(password, salt, 1)
    if guess.lower() not in (right, once):
        assert not faktory_wire.password_matches(password, salt, iterations, guess)
