"""Flow control's pure parts: rate strings, queue limits, the token bucket step."""

from __future__ import annotations

from collections import deque

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


def test_each_token_comes_back_one_period_after_it_was_taken() -> None:
    rate, out = Rate(2, 1.0), deque[float]()
    assert take_token(rate, out, 100.0) is None
    assert take_token(rate, out, 100.5) is None
    assert take_token(rate, out, 100.9) == 101.0  # empty until the first token is back
    assert list(out) == [100.0, 100.5]
    assert take_token(rate, out, 101.0) is None
    assert list(out) == [100.5, 101.0]


def test_tasks_held_by_one_claim_wait_for_successive_tokens() -> None:
    rate, out = Rate(2, 1.0), deque([10.0, 10.2])
    waits = [take_token(rate, out, 10.5, ahead=k) for k in range(5)]
    assert waits == pytest.approx([11.0, 11.2, 12.0, 12.2, 13.0])


def test_a_lowered_count_waits_for_enough_tokens_back() -> None:
    assert take_token(Rate(1, 1.0), deque([10.0, 10.2, 10.4]), 10.5) == 11.4


def test_a_clock_stepping_back_brings_no_token_back() -> None:
    assert take_token(Rate(1, 1.0), deque([100.0]), 50.0) == 101.0
