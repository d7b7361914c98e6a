"""Option parsing and message building (pure logic, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor import ConfigError, Task
from conveyor.options import DEFAULT_TIMEOUT, TaskOptions, build_message, parse_options, unique_key


def test_layers_merge_with_later_ones_winning() -> None:
    base = parse_options({"queue": "low", "max_retry": 5}, defaults_only=True)
    call = parse_options({"queue": "high", "timeout": 3})
    merged = base.merged(call)
    assert (merged.queue, merged.max_retry, merged.timeout) == ("high", 5, timedelta(seconds=3))
    assert base.merged(TaskOptions()) is base


def test_default_timeout_only_without_timeout_or_deadline() -> None:
    plain = build_message(Task("a.b"), TaskOptions())
    with_deadline = build_message(
        Task("a.b"), parse_options({"deadline": datetime(2030, 1, 1, tzinfo=UTC)})
    )
    assert plain.timeout_s == DEFAULT_TIMEOUT.total_seconds()
    assert with_deadline.timeout_s is None
    assert with_deadline.deadline == datetime(2030, 1, 1, tzinfo=UTC).timestamp()


def test_schedule_options_are_relative_or_absolute() -> None:
    relative = build_message(Task("a.b"), parse_options({"process_in": timedelta(minutes=1)}))
    when = datetime(2030, 1, 1)  # naive: taken as UTC
    absolute = build_message(Task("a.b"), parse_options({"process_at": when}))
    assert (relative.process_in_s, relative.process_at) == (60.0, None)
    assert absolute.process_at == when.replace(tzinfo=UTC).timestamp()


def test_unique_key_is_stable_and_scoped() -> None:
    a = build_message(Task("a.b", {"x": 1}), parse_options({"unique": 10}))
    b = build_message(Task("a.b", {"x": 1}), parse_options({"unique": 10}))
    assert a.unique_key == b.unique_key == unique_key("a.b", b'{"x":1}', "default")
    assert a.unique_ttl_s == 10
    assert unique_key("a.b", b"1", "q1") != unique_key("a.b", b"1", "q2")
    assert unique_key("a", b"b1", "q") != unique_key("ab", b"1", "q")


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"queueue": "x"}, TypeError, "'queueue'"),
        ({"task_id": "x"}, TypeError, "as a default"),
        ({"timeout": "10"}, TypeError, "timeout"),
        ({"timeout": 0}, ConfigError, "more than zero"),
        ({"unique": -1}, ConfigError, "unique"),
        ({"retention": timedelta(seconds=-1)}, ConfigError, "retention"),
        ({"timeout": float("nan")}, ConfigError, "finite"),
        ({"max_retry": True}, TypeError, "max_retry"),
        ({"queue": 5}, TypeError, "queue"),
        ({"queue": ""}, ConfigError, "queue"),
    ],
)
def test_invalid_options(options: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_options(options, defaults_only=True)


def test_invalid_call_only_options() -> None:
    with pytest.raises(TypeError, match="datetime"):
        parse_options({"deadline": 5})
    with pytest.raises(ConfigError, match="task id"):
        parse_options({"task_id": "has space"})


def test_generated_ids_are_distinct_time_ordered_uuid7_strings() -> None:
    import time
    import uuid

    before = time.time_ns() // 1_000_000
    ids = [build_message(Task("a.b"), TaskOptions()).id for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 2000
    for task_id in ids[:200]:
        parsed = uuid.UUID(task_id)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, task_id)
        assert before <= parsed.int >> 80 <= after  # the leading 48 bits: the millisecond clock
    # Ordered by millisecond (ids made within one millisecond are in random order).
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    assert stamps == sorted(stamps)


def test_fast_encoding_matches_the_reference_codec() -> None:
    from conveyor.message import encode_payload

    for payload in [None, 1, "é", {"a": [1, 2.5, None]}, b"\x00raw"]:
        message = build_message(Task("a.b", payload), TaskOptions())
        assert (message.payload, message.encoding) == encode_payload(payload)
