"""Inputs the fuzz harnesses (fuzz/) found: each decoder gives its typed error, nothing else.

One test per input class a harness turned up, against the real decoder (and a real SQLite file
where the decoder reads one). The ``xfail(strict=True)`` tests are issues found in code this
work did not change (connect.py, the SQLite connection); they start passing when it is fixed.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from conveyor import AsyncClient, Task, TaskState
from conveyor.brokers import open_broker
from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.redis.connect import parse_redis_url
from conveyor.brokers.sqlite import SqliteBroker
from conveyor.config import redact_url, split_broker_url
from conveyor.errors import BrokerError, ConfigError
from conveyor.message import TaskMessage
from conveyor.options import parse_options

SECRET = "Pw9zQx7"

# -- broker URLs: the password never shows in an error ---------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        # The "//" forgotten: the user info has no start, so all before the "@" is hidden.
        (f"redis:user:{SECRET}@host:6379", "***@host:6379"),
        (f"redis+cluster:user:{SECRET}@#", "***@#"),
        # A "//" inside the password, or after it, is not the authority marker.
        (f"unix:/user:{SECRET}//x@/run/redis.sock", "***@/run/redis.sock"),
        (f"redis:user:{SECRET}@//h/0", "***@//h/0"),
    ],
)
def test_redact_url_hides_a_password_without_a_leading_double_slash(
    url: str, redacted: str
) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    "url",
    [
        f"redis+cluster://user:{SECRET}/@#",  # urlsplit's "bad port" quoted the password
        f"redis+cluster:user:{SECRET}@#",
        f"memory:user:{SECRET}@x",
        f"unix:/user:{SECRET}//x@/path",
    ],
)
def test_url_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_broker(url)
    errors = [caught.value]
    for parse in (split_broker_url, MemoryBroker.from_url, SqliteBroker.from_url):
        try:
            parse(url)
        except ConfigError as exc:
            errors.append(exc)
    assert len(errors) > 1
    assert not [str(e) for e in errors if SECRET in str(e)]


@pytest.mark.parametrize(
    "url",
    [
        f"sqlite:x?u:{SECRET}@h?bogus=1",  # the "user info" ends up in the query
        f"sqlite:///x.db?busy_timeout_ms=u:{SECRET}@h",
        f"sqlite:///x.db?u:{SECRET}@h=1&u:{SECRET}@h=2",
    ],
)
def test_sqlite_url_option_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SqliteBroker.from_url(url)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("busy", ["²", "١٢", "9" * 5000, "2147483648", "0", "-1", ""])
def test_sqlite_url_busy_timeout_out_of_range_is_a_config_error(busy: str) -> None:
    with pytest.raises(ConfigError, match="busy_timeout_ms"):
        SqliteBroker.from_url(f"sqlite:///x.db?busy_timeout_ms={busy}")


def test_sqlite_url_busy_timeout_at_its_limit_is_accepted(tmp_path: Path) -> None:
    broker = SqliteBroker.from_url(f"sqlite:///{tmp_path}/x.db?busy_timeout_ms=2147483647")
    assert broker.busy_timeout_s == 2147483.647


@pytest.mark.parametrize(
    "url", ["redis://h/²", "redis://h/1" + "0" * 4400, "redis+sentinel://h:²/s"]
)
def test_redis_url_bad_numbers_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_redis_url(url)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://u:s3c?{SECRET}=1@localhost",
        f"redis://user:{SECRET}//x@/0",
        f"redis://h/:{SECRET}@",
    ],
)
def test_redis_url_errors_never_show_any_of_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_url(url)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"unix:///user:{SECRET}@/run/redis.sock",  # the "password" lands in the path
        f"redis+sentinel://u:1/{SECRET}@h",  # ... in the service name
        f"rediss://u:1?namespace={SECRET}&ssl_ca_certs=@h",  # ... in the options
    ],
)
def test_redis_target_repr_never_shows_the_password(url: str) -> None:
    assert SECRET not in repr(parse_redis_url(url))


# -- task options: out-of-range values are ConfigErrors, not OverflowError/ValueError --------


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 1e300},
        {"process_in": 1e15},
        {"retention": 86400.0 * 1e9},
        {"unique": timedelta.max},  # its float seconds round up past timedelta.max
        {"timeout": timedelta(days=999_999_999)},
        {"deadline": datetime.max},  # its timestamp rounds up into year 10000
        {"process_at": datetime.max.replace(tzinfo=UTC)},
        {"deadline": datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=23)))},
        {"process_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23)))},
        {"max_retry": 2**63},  # past SQLite's INTEGER
        {"max_retry": 10**30},
    ],
)
def test_out_of_range_options_are_config_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"out of range|at most"):
        parse_options(options)


async def test_the_largest_accepted_options_round_trip_through_sqlite(tmp_path: Path) -> None:
    broker = SqliteBroker(tmp_path / "edge.db")
    options: dict[str, object] = {
        "max_retry": 2**63 - 1,
        "timeout": timedelta(days=999_999_998),
        "retention": timedelta(days=999_999_998),
        "deadline": datetime(9999, 12, 30, tzinfo=UTC),
    }
    async with AsyncClient(broker) as client:
        info = await client.enqueue(Task("edge.case", None), **options)  # type: ignore[arg-type]
    stored = await broker.get_task("default", info.id)
    assert (stored.max_retry, stored.timeout) == (2**63 - 1, timedelta(days=999_999_998))
    await broker.close()


# -- known issues in code this work does not change -------------------------------------------


async def test_a_non_utf8_text_column_does_not_block_its_queue(tmp_path: Path) -> None:
    broker = SqliteBroker(tmp_path / "poison.db")
    await broker.enqueue([TaskMessage(id="bad", type="x"), TaskMessage(id="good", type="x")])
    with sqlite3.connect(tmp_path / "poison.db") as conn:
        conn.execute("UPDATE tasks SET type = CAST(x'ff41' AS TEXT) WHERE id = 'bad'")
    try:
        leases = await broker.claim(["default"], limit=10, lease_s=30)  # BrokerError today
        assert [lease.task.id for lease in leases] == ["good"]
        bad = await broker.get_task("default", "bad")
        assert bad.state is TaskState.ARCHIVED
    except BrokerError:
        pytest.fail("one undecodable row made claim fail for the whole queue")
    finally:
        await broker.close()
