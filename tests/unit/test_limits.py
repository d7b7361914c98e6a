"""Flow control's pure parts: rate strings, queue limits, the token bucket step."""

from __future__ import annotations

import pytest

from conveyor.brokers.limits import QueueLimit, Rate, take_token
from conveyor.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "count", "period_s"),
    [
        ("10/s", 10, 1.0),
        ("600/m", 600, 60.0),
        ("5/h", 5, 3600.0),
        ("100/10s", 100, 10.0),
        (" 3 / 2m ", 3, 120.0),
        ("1/0.5s", 1, 0.5),
    ],
)
def test_rates_parse(text: str, count: int, period_s: float) -> None:
    assert Rate.parse(text) == Rate(count, period_s)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("10/x", "unit 'x'"),
        ("ten/s", "count 'ten'"),
        ("0/s", "count '0'"),
        ("-1/s", "count '-1'"),
        ("10", "expected '<count>/<unit>'"),
        ("10/0s", "period '0'"),
        ("10/sec", "unit 'sec'"),
        ("", "expected"),
    ],
)
def test_a_bad_rate_is_a_config_error_naming_the_bad_part(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named) as caught:
        Rate.parse(text)
    assert isinstance(caught.value, ValueError)


def test_rates_print_as_they_are_written() -> None:
    assert [str(Rate.parse(t)) for t in ("10/s", "600/m", "5/h", "100/10s")] == [
        "10/s",
        "600/m",
        "5/h",
        "100/10s",
    ]


def test_queue_limits_are_checked() -> None:
    with pytest.raises(ConfigError):
        QueueLimit(max_length=-1)
    with pytest.raises(ConfigError):
        QueueLimit(max_length=5, overflow="drop-oldest")  # type: ignore[arg-type]


def test_a_bucket_refills_continuously_up_to_its_count() -> None:
    rate = Rate(2, 1.0)
    tokens, wait = take_token(rate, 2.0, 100.0, 100.0)
    assert (tokens, wait) == (1.0, None)
    tokens, wait = take_token(rate, 0.0, 100.0, 100.25)  # half a token refilled
    assert wait == pytest.approx(100.5) and tokens == pytest.approx(0.5)
    tokens, wait = take_token(rate, 0.0, 100.0, 1000.0)  # capped at the count
    assert (tokens, wait) == (1.0, None)
    tokens, wait = take_token(rate, 0.0, 100.0, 100.0, ahead=2)  # the third held back
    assert wait == pytest.approx(101.5)


def test_a_clock_stepping_back_refills_nothing() -> None:
    tokens, wait = take_token(Rate(1, 1.0), 0.0, 100.0, 50.0)
    assert tokens == 0.0 and wait == pytest.approx(51.0)
