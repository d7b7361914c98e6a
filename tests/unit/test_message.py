"""Names, the JSON codec, the payload cap and the message shapes in conveyor.message."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from conveyor.errors import (
    ConfigError,
    InvalidNameError,
    PayloadError,
    PayloadTooLargeError,
)
from conveyor.message import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    NAME_RULE,
    Encoding,
    QueueStats,
    Task,
    TaskInfo,
    TaskState,
    decode_json,
    decode_payload,
    encode_json,
    encode_payload,
    new_task_id,
    to_datetime,
    to_timestamp,
    validate_name,
)


@pytest.mark.parametrize(
    "name", ["a", "default", "email:welcome", "my_queue.v2-prod", "0", "A" * 255, "a.b:c_d-e"]
)
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert validate_name(name, what="queue") == name


@pytest.mark.parametrize(
    "name",
    ["", "A" * 256, "has space", "slash/name", "new\nline", "tab\t", "ünï", "semi;colon", "a*"],
)
def test_invalid_names_raise_naming_what_and_the_rule(name: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        validate_name(name, what="queue name")

    message = str(caught.value)
    assert "queue name" in message and NAME_RULE in message
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)


def test_non_string_name_is_invalid() -> None:
    with pytest.raises(InvalidNameError):
        validate_name(42, what="task id")  # type: ignore[arg-type]


def test_new_task_ids_are_fresh_valid_names() -> None:
    ids = {new_task_id() for _ in range(100)}

    assert len(ids) == 100
    assert all(validate_name(i, what="task id") == i for i in ids)


def test_task_validates_its_type() -> None:
    assert Task("email:send", {"to": 1}).payload == {"to": 1}
    with pytest.raises(InvalidNameError):
        Task("bad type")


def test_encode_json_is_compact_utf8() -> None:
    assert encode_json({"a": [1, 2], "b": "é✓"}) == '{"a":[1,2],"b":"é✓"}'.encode()


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -1.5, "text", [], {}, {"nested": [{"x": [None, False, 1e300]}]}, "日本"],
)
def test_json_round_trips(value: object) -> None:
    assert decode_json(encode_json(value)) == value


def test_tuples_encode_as_lists() -> None:
    assert decode_json(encode_json((1, (2, 3)))) == [1, [2, 3]]


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ({"a": [1, {2}]}, ["payload['a'][1]", "set"]),
        ([object()], ["payload[0]", "object"]),
        ({"when": datetime(2024, 1, 1)}, ["payload['when']", "datetime"]),
        ({"x": math.nan}, ["payload['x']", "nan"]),
        ([1, math.inf], ["payload[1]", "inf"]),
        ({(1, 2): "tuple key"}, ["non-string key", "(1, 2)"]),
        ({"a": [{1: "int key"}]}, ["payload['a'][0]", "non-string key 1"]),
        ({None: 1}, ["non-string key None"]),
        ({"b": b"bytes"}, ["payload['b']", "bytes"]),
    ],
)
def test_encode_json_names_the_bad_value(value: object, fragments: list[str]) -> None:
    with pytest.raises(PayloadError) as caught:
        encode_json(value)

    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    assert isinstance(caught.value, TypeError)


def test_encode_json_refuses_absurd_nesting() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]

    with pytest.raises(PayloadError):
        encode_json(deep)


@pytest.mark.parametrize("data", [b"", b"{", b"nope", b'{"a":}', b"\xff\xfe"])
def test_decode_json_rejects_invalid_data_with_its_size(data: bytes) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_json(data)

    assert f"{len(data)} bytes" in str(caught.value)


@pytest.mark.parametrize("raw", [b"\x00\xffbinary", bytearray(b"ba"), memoryview(b"mv")])
def test_bytes_payloads_pass_through_untouched(raw: bytes | bytearray | memoryview) -> None:
    data, encoding = encode_payload(raw)

    assert (data, encoding) == (bytes(raw), Encoding.BYTES)
    assert decode_payload(data, encoding) == bytes(raw)


def test_json_payload_round_trips_through_encode_payload() -> None:
    data, encoding = encode_payload({"k": [1, "v"]})

    assert encoding is Encoding.JSON
    assert decode_payload(data, encoding) == {"k": [1, "v"]}


def test_payload_at_the_cap_is_accepted_and_one_byte_over_is_refused() -> None:
    at_cap = "x" * (100 - 2)  # the JSON string adds two quotes
    assert len(encode_payload(at_cap, limit=100)[0]) == 100

    with pytest.raises(PayloadTooLargeError) as caught:
        encode_payload(at_cap + "x", limit=100)

    assert (caught.value.size, caught.value.limit) == (101, 100)
    assert isinstance(caught.value, ValueError)
    assert "101" in str(caught.value) and "100" in str(caught.value)


def test_default_cap_is_one_mebibyte_for_bytes_too() -> None:
    assert DEFAULT_MAX_PAYLOAD_BYTES == 1024 * 1024
    assert encode_payload(b"\0" * DEFAULT_MAX_PAYLOAD_BYTES)[1] is Encoding.BYTES

    with pytest.raises(PayloadTooLargeError):
        encode_payload(b"\0" * (DEFAULT_MAX_PAYLOAD_BYTES + 1))


def test_timestamps_convert_to_aware_utc() -> None:
    when = to_datetime(1_700_000_000.25)

    assert when == datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)
    assert when is not None and when.utcoffset() == timedelta(0)
    assert to_datetime(None) is None


def test_to_timestamp_reads_naive_as_utc_and_respects_offsets() -> None:
    naive = datetime(2023, 11, 14, 22, 13, 20)
    plus_two = datetime(2023, 11, 15, 0, 13, 20, tzinfo=timezone(timedelta(hours=2)))

    assert to_timestamp(naive) == 1_700_000_000.0
    assert to_timestamp(plus_two) == 1_700_000_000.0


def test_task_info_decodes_payload_and_result() -> None:
    info = TaskInfo(
        id="t",
        queue="q",
        type="x",
        state=TaskState.COMPLETED,
        raw_payload=b'{"a":1}',
        raw_result=b"[1,2]",
    )

    assert (info.payload, info.result) == ({"a": 1}, [1, 2])
    assert TaskInfo(id="t", queue="q", type="x", state=TaskState.PENDING).result is None
    raw = TaskInfo(
        id="t",
        queue="q",
        type="x",
        state=TaskState.PENDING,
        raw_payload=b"\x00",
        encoding=Encoding.BYTES,
    )
    assert raw.payload == b"\x00"


def test_queue_size_excludes_completed_tasks() -> None:
    stats = QueueStats(
        queue="q", pending=1, scheduled=2, active=3, retry=4, archived=5, completed=100
    )

    assert stats.size == 15


def test_task_states_are_lowercase_strings() -> None:
    assert [s.value for s in TaskState] == [
        "pending",
        "scheduled",
        "active",
        "retry",
        "archived",
        "completed",
    ]


def test_from_message_and_fast_message_building_match_the_dataclass_constructors() -> None:
    from dataclasses import fields

    from conveyor.message import TaskMessage, _new_task_message

    values = {
        "id": "i",
        "type": "t",
        "queue": "q",
        "payload": b"[1]",
        "encoding": Encoding.BYTES,
        "max_retry": 3,
        "timeout_s": 1.5,
        "deadline": 1_700_000_000.0,
        "retention_s": 60.0,
        "unique_key": "k",
        "unique_ttl_s": 30.0,
        "process_at": 1_700_000_100.0,
        "process_in_s": 5.0,
        "headers": b'{"h":"v"}',
    }
    assert [f.name for f in fields(TaskMessage)] == list(values)  # declaration order
    message = TaskMessage(**values)  # type: ignore[arg-type]
    assert _new_task_message(*values.values()) == message

    at = datetime(2026, 1, 1, tzinfo=UTC)
    info = TaskInfo.from_message(
        message, state=TaskState.RETRY, enqueued_at=at, next_process_at=at, retried=2
    )
    assert info == TaskInfo(
        id="i",
        queue="q",
        type="t",
        state=TaskState.RETRY,
        raw_payload=b"[1]",
        encoding=Encoding.BYTES,
        max_retry=3,
        retried=2,
        timeout=timedelta(seconds=1.5),
        deadline=datetime.fromtimestamp(1_700_000_000.0, UTC),
        next_process_at=at,
        enqueued_at=at,
        retention=timedelta(seconds=60),
        unique_key="k",
        raw_headers=b'{"h":"v"}',
    )
    assert dict(info.headers) == {"h": "v"}
    with pytest.raises(AttributeError):
        info.id = "changed"  # type: ignore[misc]  # still frozen


@pytest.mark.parametrize(
    ("task_id", "workflow_id"),
    [
        ("wf.01a24d7b-24f7-7d48-9a94-57678203fee8.0", "01a24d7b-24f7-7d48-9a94-57678203fee8"),
        ("wf.abc.12", "abc"),
        ("01a24d7b-24f7-7d48-9a94-57678203fee8", None),
        ("wf.abc", None),
        ("wf.abc.x", None),
        ("my-wf.abc.1", None),
    ],
)
def test_a_task_knows_the_workflow_it_is_a_step_of(task_id: str, workflow_id: str | None) -> None:
    info = TaskInfo(id=task_id, queue="default", type="demo", state=TaskState.PENDING)
    assert info.workflow_id == workflow_id
