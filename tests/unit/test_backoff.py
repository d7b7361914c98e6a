"""The default retry delay: capped exponential backoff with jitter."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from conveyor.backoff import ExponentialBackoff, ReconnectBackoff, default_retry_delay
from conveyor.errors import ConfigError
from conveyor.message import Task

TASK = Task("email:send")
ERROR = ValueError("boom")


def test_without_jitter_the_delay_doubles_from_base_up_to_the_cap() -> None:
    backoff = ExponentialBackoff(jitter=0.0)
    delays = [backoff(n, ERROR, TASK).total_seconds() for n in range(13)]
    assert delays[:4] == [5.0, 10.0, 20.0, 40.0]
    assert delays[10:] == [3600.0, 3600.0, 3600.0]


def test_jitter_stays_within_its_fraction_of_the_delay() -> None:
    backoff = ExponentialBackoff(jitter=0.5, rng=random.Random(7))
    for n in range(30):
        raw = min(3600.0, 5.0 * 2**n)
        delay = backoff(n, ERROR, TASK).total_seconds()
        assert raw * 0.5 <= delay <= raw


def test_seeded_backoff_is_reproducible() -> None:
    first = ExponentialBackoff(rng=random.Random(3))
    second = ExponentialBackoff(rng=random.Random(3))
    assert [first(n, ERROR, TASK) for n in range(10)] == [second(n, ERROR, TASK) for n in range(10)]


def test_huge_retry_counts_do_not_overflow() -> None:
    assert ExponentialBackoff(jitter=0.0)(10**9, ERROR, TASK) == timedelta(hours=1)
    assert default_retry_delay(10**6, ERROR, TASK) <= timedelta(hours=1)


def test_a_full_default_retry_budget_spans_hours_not_weeks() -> None:
    backoff = ExponentialBackoff(jitter=0.0)
    total = sum((backoff(n, ERROR, TASK) for n in range(25)), timedelta())
    assert timedelta(hours=12) < total < timedelta(hours=20)


@pytest.mark.parametrize(
    "options",
    [
        {"base": timedelta(0)},
        {"cap": timedelta(seconds=1)},
        {"factor": 0.5},
        {"jitter": 1.5},
    ],
)
def test_invalid_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ExponentialBackoff(**options)  # type: ignore[arg-type]


def test_reconnect_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = ReconnectBackoff(first_s=0.1, cap_s=0.4)
    delays = [backoff.next_delay() for _ in range(5)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 0.4 for d in delays)
    assert delays[-1] >= 0.2
    backoff.reset()
    assert backoff.next_delay() <= 0.1
