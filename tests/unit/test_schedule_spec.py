"""Fire times: cron (five and six fields, aliases), intervals, time zones and DST; bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from conveyor.errors import ConfigError
from conveyor.scheduling.spec import ALIASES, FireSpec, MissedPolicy, parse_missed

PARIS = ZoneInfo("Europe/Paris")


def ts(*args: int, tz: object = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[arg-type, misc]


def local(t: float, tz: ZoneInfo = PARIS) -> str:
    return datetime.fromtimestamp(t, tz).isoformat()


def run(spec: FireSpec, start: float, n: int) -> list[float]:
    out, at = [], start
    for _ in range(n):
        at = spec.next_after(at)
        out.append(at)
    return out


def test_five_field_cron_fires_strictly_after_the_given_time() -> None:
    spec = FireSpec.parse(cron="30 7 * * mon-fri")
    friday = ts(2026, 12, 4, 7, 30)

    assert spec.next_after(friday - 1) == friday
    assert spec.next_after(friday) == ts(2026, 12, 7, 7, 30)  # the weekend is skipped
    assert spec.last_at_or_before(friday) == friday
    assert spec.last_at_or_before(friday - 0.5) == ts(2026, 12, 3, 7, 30)


def test_six_field_cron_has_the_seconds_first() -> None:
    spec = FireSpec.parse(cron="*/10 * * * * *")
    start = ts(2026, 1, 1, 0, 0, 3)

    assert run(spec, start, 3) == [start + 7, start + 17, start + 27]


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_fire_as_their_expressions(alias: str) -> None:
    start = ts(2026, 5, 17, 13, 45)

    assert FireSpec.parse(cron=alias).next_after(start) == FireSpec.parse(
        cron=ALIASES[alias]
    ).next_after(start)


def test_hourly_and_daily_aliases() -> None:
    start = ts(2026, 5, 17, 13, 45)
    assert FireSpec.parse(cron="@hourly").next_after(start) == ts(2026, 5, 17, 14)
    assert FireSpec.parse(cron="@daily").next_after(start) == ts(2026, 5, 18)


def test_every_fires_on_multiples_of_the_interval_since_the_epoch() -> None:
    spec = FireSpec.parse(every=timedelta(minutes=15), tz="Asia/Kolkata")  # tz plays no part

    assert spec.next_after(ts(2026, 3, 1, 10, 7, 12)) == ts(2026, 3, 1, 10, 15)
    assert spec.next_after(ts(2026, 3, 1, 10, 15)) == ts(2026, 3, 1, 10, 30)
    assert spec.last_at_or_before(ts(2026, 3, 1, 10, 15)) == ts(2026, 3, 1, 10, 15)
    assert FireSpec.parse(every=7).next_after(100.0) == 105.0


def test_cron_in_a_time_zone() -> None:
    spec = FireSpec.parse(cron="0 9 * * *", tz="Europe/Paris")

    assert local(spec.next_after(ts(2026, 7, 1, 12))) == "2026-07-02T09:00:00+02:00"
    assert local(spec.next_after(ts(2026, 1, 1, 12))) == "2026-01-02T09:00:00+01:00"


def test_a_fire_time_in_the_skipped_hour_fires_once_at_the_first_valid_instant_after() -> None:
    # 2026-03-29: Paris goes from 02:00 to 03:00; 02:30 does not exist that day.
    spec = FireSpec.parse(cron="30 2 * * *", tz="Europe/Paris")

    fires = run(spec, ts(2026, 3, 28, 12), 3)

    assert [local(f) for f in fires] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_several_fire_times_in_the_skipped_hour_fire_once() -> None:
    spec = FireSpec.parse(cron="0,30 * * * *", tz="Europe/Paris")

    fires = run(spec, ts(2026, 3, 29, 1, 10, tz=PARIS), 3)

    assert [local(f) for f in fires] == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]


def test_a_fire_time_in_the_repeated_hour_fires_once() -> None:
    # 2026-10-25: Paris goes back from 03:00 to 02:00; 02:30 happens twice.
    spec = FireSpec.parse(cron="30 2 * * *", tz="Europe/Paris")

    fires = run(spec, ts(2026, 10, 24, 12), 2)

    assert [local(f) for f in fires] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    repeated = ts(2026, 10, 25, 1, 45)  # 02:45 the second time (UTC+1)
    assert local(spec.last_at_or_before(repeated) or 0) == "2026-10-25T02:30:00+02:00"


def test_every_ignores_daylight_saving_time() -> None:
    spec = FireSpec.parse(every=3600, tz="Europe/Paris")
    start = ts(2026, 10, 24, 23)

    assert run(spec, start, 4) == [start + 3600 * i for i in range(1, 5)]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"cron": "61 * * * *"}, "minute field '61'"),
        ({"cron": "0 25 * * *"}, "hour field '25'"),
        ({"cron": "0 0 * 13 *"}, "month field '13'"),
        ({"cron": "0 0 * * funday"}, "day-of-week field 'funday'"),
        ({"cron": "99 * * * * *"}, "second field '99'"),
        ({"cron": "* * *"}, "has 3 fields"),
        ({"cron": "* * * * * * *"}, "has 7 fields"),
        ({"cron": "@sometimes"}, "unknown cron alias '@sometimes'"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"every": 0.5}, "at least 1 second"),
        ({"every": float("nan")}, "finite"),
        ({}, "exactly one of cron= and every="),
        ({"cron": "* * * * *", "every": 5}, "exactly one of cron= and every="),
    ],
)
def test_bad_specs_raise_config_error_naming_the_bad_part(
    kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")) as caught:
        FireSpec.parse(**kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)


def test_missed_policies() -> None:
    assert [parse_missed(p) for p in ("once", "skip", "all")] == list(MissedPolicy)
    with pytest.raises(ConfigError, match="'sometimes'"):
        parse_missed("sometimes")
