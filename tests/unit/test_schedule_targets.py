"""What app.schedule accepts: signatures and workflows turned into stored entries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest

from conveyor import (
    App,
    ConfigError,
    PayloadTooLargeError,
    ScheduleInfo,
    ScheduleTarget,
    chain,
    chord,
    group,
    signature,
)
from conveyor.brokers.memory import MemoryBroker
from conveyor.brokers.workflows import step_task_id
from conveyor.scheduling.entry import (
    messages_for,
    schedule_task_id,
    schedule_workflow_id,
    target_of,
    workflows_for,
)


@pytest.fixture
def app() -> Iterator[App]:
    app = App(MemoryBroker(), queue="app-q", max_retry=9)

    @app.task(name="add", max_retry=4)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="total")
    def total(values: list[int]) -> int:
        return sum(values)

    yield app
    app.close()


def test_a_signature_is_one_task_with_layered_options(app: App) -> None:
    add = app.tasks["add"]
    entry = app.schedule(add.s(1, 2).options(queue="sig-q", timeout=30), every=60, retention=5)

    assert entry.target is ScheduleTarget.TASK and entry.workflow is None
    assert (entry.name, entry.task_type, entry.payload) == ("add", "add", {"a": 1, "b": 2})
    opts = entry.options
    # app defaults < the task's < the signature's own < the schedule's
    assert (opts.queue, opts.max_retry, opts.timeout, opts.retention) == (
        "sig-q",
        4,
        timedelta(seconds=30),
        timedelta(seconds=5),
    )
    over = app.schedule(add.si(1, 2).options(queue="sig-q"), every=60, name="o", queue="call-q")
    assert over.options.queue == "call-q"
    record = over.record(owner="app", next_fire_at=60.0)
    assert target_of(record) is ScheduleTarget.TASK
    [message] = messages_for(record, [60.0])
    assert (message.id, message.queue, json.loads(message.payload)) == (
        schedule_task_id("o", 60.0),
        "call-q",
        {"a": 1, "b": 2},
    )


def test_a_task_function_a_signature_and_a_workflow_step_layer_options_alike(app: App) -> None:
    # One layering (scheduled_options) for every target: app < task < own < the schedule's.
    ping = app.task(name="ping", timeout=7)(lambda: None)
    as_function = app.schedule(ping, every=60, retention=5)
    as_signature = app.schedule(ping.si(), every=60, name="sig", retention=5)
    as_step = app.schedule(chain(ping.si(), ping.si()), every=60, name="flow", retention=5)

    assert as_function.options == as_signature.options
    opts = as_function.options
    assert (opts.queue, opts.max_retry, opts.timeout, opts.retention) == (
        "app-q",
        9,
        timedelta(seconds=7),
        timedelta(seconds=5),
    )
    assert as_step.workflow is not None
    step = json.loads(as_step.workflow.graph)["steps"][0]
    assert (step["queue"], step["max_retry"], step["timeout_s"], step["retention_s"]) == (
        "app-q",
        9,
        7.0,
        5.0,
    )


def test_a_raw_signature_takes_the_app_defaults(app: App) -> None:
    entry = app.schedule(signature("report.nightly", {"full": True}), cron="@daily")

    assert (entry.name, entry.task_type, entry.payload) == (
        "report.nightly",
        "report.nightly",
        {"full": True},
    )
    assert (entry.options.queue, entry.options.max_retry) == ("app-q", 9)


def test_a_signature_needing_its_parents_result_is_refused(app: App) -> None:
    with pytest.raises(TypeError, match="no parent"):
        app.schedule(app.tasks["add"].s(1), every=60)
    assert app.schedules == {}


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda add, total: chain(add.s(1, 2), add.s(3)), ScheduleTarget.CHAIN),
        (lambda add, total: group(add.s(1, 2), add.s(3, 4)), ScheduleTarget.GROUP),
        (lambda add, total: chord([add.s(1, 2), add.s(3, 4)], total.s()), ScheduleTarget.CHORD),
        (lambda add, total: add.s(1, 2).link(add.s(10)), ScheduleTarget.LINKED),
    ],
)
def test_workflows_are_compiled_once_and_fired_under_ids_of_their_own(
    app: App, make: object, kind: ScheduleTarget
) -> None:
    canvas = make(app.tasks["add"], app.tasks["total"])  # type: ignore[operator]
    entry = app.schedule(canvas, every=60, name="flow", queue="flow-q")

    assert entry.target is kind and entry.workflow is not None
    assert (entry.task_type, entry.payload) == ("add", None)
    record = entry.record(owner="app", next_fire_at=60.0)
    assert (record.queue, target_of(record)) == ("flow-q", kind)
    info = ScheduleInfo.from_record(record)
    assert (info.target, info.payload, info.task_type) == (kind, None, "add")

    first, second = workflows_for(record, [60.0, 120.0])

    assert (first.id, second.id) == (
        schedule_workflow_id("flow", 60.0),
        schedule_workflow_id("flow", 120.0),
    )
    assert first.id != second.id and first.steps == second.steps >= 2
    assert first.first and all(m.queue == "flow-q" and m.max_retry == 4 for m in first.first)
    steps = json.loads(first.graph)["steps"]
    assert [s["id"] for s in steps] == [step_task_id(first.id, i) for i in range(len(steps))]
    assert workflows_for(record, [60.0]) == (first,)  # the same for every scheduler


def test_workflow_schedules_need_a_name_and_refuse_unique(app: App) -> None:
    add = app.tasks["add"]
    with pytest.raises(ConfigError, match="needs a name"):
        app.schedule(chain(add.s(1, 2), add.s(3)), every=60)
    with pytest.raises(TypeError, match="unique"):
        app.schedule(chain(add.s(1, 2), add.s(3)), every=60, name="u", unique=60)
    with pytest.raises(TypeError, match="schedule a task function"):
        app.schedule(print, every=60)  # type: ignore[arg-type]
    assert app.schedules == {}


def test_a_workflow_graph_over_the_payload_cap_is_refused(app: App) -> None:
    add = app.tasks["add"]
    entry = app.schedule(group(add.s(i, i) for i in range(50)), every=60, name="big")

    with pytest.raises(PayloadTooLargeError):
        entry.record(owner="app", next_fire_at=60.0, max_payload_bytes=1000)
