"""app.schedule / @app.periodic (checked where they are written) and the Inspector's schedule
methods on a real SQLite file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from conveyor import App, ConfigError, Inspector, MissedPolicy, ScheduleNotFoundError


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'schedules.db'}"


def test_schedule_merges_the_app_task_and_schedule_options(url: str) -> None:
    app = App(url, max_retry=7)

    @app.task(queue="reports", timeout=60, name="report.daily")
    def report(full: bool = False) -> None: ...

    entry = app.schedule(report, cron="0 7 * * mon-fri", tz="Europe/Paris", retention=30)

    assert (entry.name, entry.task_type, entry.payload) == (report.name, report.name, {})
    assert (entry.cron, entry.every, entry.tz, entry.missed) == (
        "0 7 * * mon-fri",
        None,
        "Europe/Paris",
        MissedPolicy.ONCE,
    )
    opts = entry.options
    assert (opts.queue, opts.max_retry, opts.timeout, opts.retention) == (
        "reports",
        7,
        timedelta(seconds=60),
        timedelta(seconds=30),
    )
    assert app.schedules == {report.name: entry}


def test_periodic_registers_a_task_and_its_schedule(url: str) -> None:
    app = App(url)

    @app.periodic(every=timedelta(minutes=5), missed="skip", name="sync.accounts", queue="sync")
    def sync_accounts() -> str:
        return "synced"

    assert sync_accounts() == "synced"
    assert "sync.accounts" in app.tasks
    entry = app.schedules["sync.accounts"]
    assert (entry.every, entry.missed, entry.options.queue) == (
        timedelta(minutes=5),
        MissedPolicy.SKIP,
        "sync",
    )


def test_schedule_refuses_what_it_cannot_fire(url: str) -> None:
    app = App(url)

    @app.task(name="needs.args")
    def needs(user_id: int) -> None: ...

    @app.task(name="fine")
    def fine() -> None: ...

    with pytest.raises(TypeError, match="no required arguments"):
        app.schedule(needs, every=60)
    with pytest.raises(TypeError, match="task function"):
        app.schedule(print, every=60)  # type: ignore[arg-type]
    app.schedule(fine, every=60)
    with pytest.raises(ConfigError, match="already defined"):
        app.schedule(fine, every=30)
    app.schedule(fine, every=30, name="fine.fast")  # another name is another entry
    with pytest.raises(ConfigError, match="hour field '24'"):
        app.schedule(fine, cron="0 24 * * *", name="bad")
    with pytest.raises(ConfigError, match="'Nowhere/Land'"):
        app.schedule(fine, cron="@daily", tz="Nowhere/Land", name="bad")
    with pytest.raises(ConfigError, match="missed must be one of"):
        app.schedule(fine, cron="@daily", missed="later", name="bad")
    with pytest.raises(TypeError, match="task_id"):
        app.schedule(fine, cron="@daily", name="bad", task_id="x")  # type: ignore[call-arg]


def test_periodic_checks_the_schedule_before_registering(url: str) -> None:
    app = App(url)

    with pytest.raises(ConfigError, match="has 3 fields"):

        @app.periodic(cron="* * *", name="never")
        def never() -> None: ...

    assert "never" not in app.tasks


def test_inspector_adds_lists_pauses_and_removes_entries(url: str) -> None:
    with Inspector(url) as inspector:
        added = inspector.add_schedule(
            "nightly", "report.nightly", {"full": True}, cron="@daily", queue="reports"
        )
        same = inspector.add_schedule(
            "nightly", "report.nightly", {"full": True}, cron="@daily", queue="reports"
        )
        inspector.pause_schedule("nightly")
        paused = inspector.list_schedules()
        inspector.unpause_schedule("nightly")
        [after] = inspector.list_schedules()
        replaced = inspector.add_schedule("nightly", "report.nightly", every=3600)
        inspector.remove_schedule("nightly")
        left = inspector.list_schedules()
        for verb in ("pause", "unpause", "remove"):
            with pytest.raises(ScheduleNotFoundError, match="no schedule named 'nightly'"):
                getattr(inspector, f"{verb}_schedule")("nightly")

    assert (added.task_type, added.payload, added.queue, added.owner) == (
        "report.nightly",
        {"full": True},
        "reports",
        None,
    )
    assert added.next_fire_at is not None and added.last_fire_at is None
    assert same == added
    assert [(s.paused, s.next_fire_at) for s in paused] == [(True, None)]
    assert (after.paused, after.next_fire_at) == (False, added.next_fire_at)
    assert (replaced.cron, replaced.every, replaced.queue) == (None, timedelta(hours=1), "default")
    assert left == []


def test_inspector_add_schedule_checks_its_input(url: str) -> None:
    with Inspector(url) as inspector:
        with pytest.raises(ConfigError, match="invalid schedule name"):
            inspector.add_schedule("no spaces", "a.b", every=60)
        with pytest.raises(ConfigError, match="invalid task type"):
            inspector.add_schedule("ok", "no spaces", every=60)
        with pytest.raises(ConfigError, match="day-of-month field '32'"):
            inspector.add_schedule("ok", "a.b", cron="0 0 32 * *")
        assert inspector.list_schedules() == []
