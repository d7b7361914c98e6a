"""Pipelines on a real worker: steps in order, resume, reentrant retries, archive, run_task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import App, AsyncInspector, Pipeline, PipelineStepState, StepLog, reentrant
from conveyor.brokers.progress import ProgressStore
from conveyor.brokers.protocol import Broker
from conveyor.errors import ConfigError
from conveyor.message import TaskInfo, TaskState
from conveyor.progress import Progress
from conveyor.worker.server import Server
from worker.harness import fast, serving


@pytest.fixture
async def app(broker: Broker) -> AsyncIterator[App]:
    instance = App(broker)
    yield instance
    await instance.aclose()


async def wait_state(broker: Broker, info: TaskInfo, state: TaskState) -> TaskInfo:
    """Wait for ``state``, read through the inspector (with the result log)."""
    inspector = AsyncInspector(broker)
    deadline = asyncio.get_running_loop().time() + 10.0
    while True:
        found = await inspector.get_task(info.queue, info.id)
        if found.state is state:
            return found
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.01)


class Calls:
    """Counts calls per step name."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts[name]


async def test_each_step_gets_the_previous_dict_and_the_last_is_the_result(
    broker: Broker, app: App
) -> None:
    def double(data: dict[str, Any]) -> dict[str, Any]:
        return {"n": data["n"] * 2}

    async def add_one(data: dict[str, Any]) -> dict[str, Any]:
        return {"n": data["n"] + 1, "seen": sorted(data)}

    pipeline = app.pipeline("math.pipe", double, add_one, retention=60)
    async with serving(Server(broker, **fast()), app.mux):
        info = await pipeline.aio.enqueue({"n": 5})
        done = await wait_state(broker, info, TaskState.COMPLETED)
    assert done.result == {"n": 11, "seen": ["n"]}
    assert done.result_log == (
        StepLog(step="double", state=PipelineStepState.SUCCEEDED, attempts=1),
        StepLog(step="add_one", state=PipelineStepState.SUCCEEDED, attempts=1),
    )


async def test_a_reentrant_step_is_retried_in_place(broker: Broker, app: App) -> None:
    calls = Calls()

    def first(data: dict[str, Any]) -> dict[str, Any]:
        calls("first")
        return data

    async def flaky(data: dict[str, Any]) -> dict[str, Any]:
        if calls("flaky") < 3:
            raise ConnectionError(f"try {calls.counts['flaky']}")
        return {"ok": True}

    pipeline = app.pipeline("p.flaky", first, reentrant(flaky, max_times=3, sleep=0.01))
    async with serving(Server(broker, **fast()), app.mux):
        info = await pipeline.options(retention=60).aio.enqueue({})
        done = await wait_state(broker, info, TaskState.COMPLETED)
    assert calls.counts == {"first": 1, "flaky": 3}
    assert done.retried == 0  # no failed attempt of the task: the step retried in place
    assert done.result_log[1] == StepLog(
        step="flaky", state=PipelineStepState.SUCCEEDED, attempts=3, error="ConnectionError: try 2"
    )


async def test_an_exhausted_reentrant_step_fails_the_task_which_resumes_at_it(
    broker: Broker, app: App
) -> None:
    calls = Calls()

    def first(data: dict[str, Any]) -> dict[str, Any]:
        calls("first")
        return {"from_first": data["x"]}

    def flaky(data: dict[str, Any]) -> dict[str, Any]:
        if calls("flaky") <= 3:
            raise ValueError("not yet")
        return {**data, "flaky": True}

    pipeline = app.pipeline(
        "p.exhausted", first, reentrant(flaky, max_times=2, sleep=0), max_retry=3, retention=60
    )
    async with serving(Server(broker, **fast()), app.mux):
        info = await pipeline.aio.enqueue({"x": 7})
        done = await wait_state(broker, info, TaskState.COMPLETED)
    # Two tries in the first run (then a task retry), two in the second: first never re-ran.
    assert calls.counts == {"first": 1, "flaky": 4}
    assert done.retried == 1
    assert done.result == {"from_first": 7, "flaky": True}
    assert done.result_log[1].attempts == 4


async def test_a_non_reentrant_step_that_raises_archives_the_task_at_once(
    broker: Broker, app: App
) -> None:
    calls = Calls()

    def reserve(data: dict[str, Any]) -> dict[str, Any]:
        calls("reserve")
        return {"reserved": True}

    def charge(data: dict[str, Any]) -> dict[str, Any]:
        if calls("charge") == 1:
            raise RuntimeError("card declined")
        return {**data, "charged": True}

    def ship(data: dict[str, Any]) -> dict[str, Any]:
        calls("ship")
        return {**data, "shipped": True}

    pipeline = app.pipeline("orders.checkout", reserve, charge, ship, max_retry=5, retention=60)
    async with serving(Server(broker, **fast()), app.mux):
        info = await pipeline.aio.enqueue({})
        archived = await wait_state(broker, info, TaskState.ARCHIVED)
        assert archived.retried == 1
        assert archived.last_error is not None
        assert (
            "non-reentrant step charge failed: RuntimeError: card declined" in archived.last_error
        )
        assert [(e.step, e.state) for e in archived.result_log] == [
            ("reserve", PipelineStepState.SUCCEEDED),
            ("charge", PipelineStepState.FAILED),
        ]
        assert calls.counts == {"reserve": 1, "charge": 1}

        # A person re-runs it: it resumes at charge, and reserve does not run again.
        await AsyncInspector(broker).run_task(info.queue, info.id)
        done = await wait_state(broker, info, TaskState.COMPLETED)
    assert calls.counts == {"reserve": 1, "charge": 2, "ship": 1}
    assert done.result == {"reserved": True, "charged": True, "shipped": True}
    assert done.result_log[1] == StepLog(
        step="charge",
        state=PipelineStepState.SUCCEEDED,
        attempts=2,
        error="RuntimeError: card declined",
    )


async def test_a_non_reentrant_step_cut_short_is_archived_as_interrupted_until_run(
    broker: Broker, app: App
) -> None:
    calls = Calls()
    started = asyncio.Event()
    hang = True

    def reserve(data: dict[str, Any]) -> dict[str, Any]:
        calls("reserve")
        return {"reserved": True}

    async def charge(data: dict[str, Any]) -> dict[str, Any]:
        calls("charge")
        if hang:  # the worker stops while the step runs: it never finishes
            started.set()
            await asyncio.Event().wait()
        return {**data, "charged": True}

    pipeline = app.pipeline("orders.pay", reserve, charge, max_retry=5, retention=60)
    async with serving(Server(broker, **fast(shutdown_timeout=0.1)), app.mux):
        info = await pipeline.aio.enqueue({})
        await asyncio.wait_for(started.wait(), 5)
    # The shutdown cancelled charge and gave the task back; the next run must not re-run it.
    hang = False
    async with serving(Server(broker, **fast()), app.mux):
        archived = await wait_state(broker, info, TaskState.ARCHIVED)
        assert archived.last_error == "SkipRetry: interrupted in non-reentrant step charge"
        assert archived.result_log[1] == StepLog(
            step="charge", state=PipelineStepState.INTERRUPTED, attempts=1
        )
        assert calls.counts == {"reserve": 1, "charge": 1}

        await AsyncInspector(broker).run_task(info.queue, info.id)
        done = await wait_state(broker, info, TaskState.COMPLETED)
    assert calls.counts == {"reserve": 1, "charge": 2}
    assert done.result == {"reserved": True, "charged": True}


async def test_a_run_resumes_from_stored_progress(broker: Broker, app: App) -> None:
    calls = Calls()

    def one(data: dict[str, Any]) -> dict[str, Any]:
        calls("one")
        return {"one": True}

    def two(data: dict[str, Any]) -> dict[str, Any]:
        calls("two")
        return {**data, "two": True}

    pipeline = app.pipeline("p.resume", one, two, retention=60)
    info = await pipeline.aio.enqueue({})
    # A worker that died right after storing step one's progress, as the broker holds it.
    [lease] = await broker.claim([info.queue], limit=1, lease_s=30)
    assert isinstance(broker, ProgressStore)
    done_one = Progress(next=1, data={"one": "stored"})
    done_one.set_entry(0, StepLog(step="one", state=PipelineStepState.SUCCEEDED, attempts=1))
    await broker.save_progress(lease, done_one.encode())
    await broker.retry(lease, error="lease expired (worker lost)", delay_s=0)

    async with serving(Server(broker, **fast()), app.mux):
        done = await wait_state(broker, info, TaskState.COMPLETED)
    assert calls.counts == {"two": 1}
    assert done.result == {"one": "stored", "two": True}


async def test_enqueue_forms_and_options(broker: Broker, app: App) -> None:
    def step(data: dict[str, Any]) -> dict[str, Any]:
        return data

    pipeline = app.pipeline("p.forms", step, queue="pipes")
    assert isinstance(pipeline, Pipeline)
    assert pipeline.steps == ("step",)
    later = await pipeline.aio.enqueue_in(timedelta(hours=1), {"a": 1})
    at = await pipeline.aio.enqueue_at(datetime.now(UTC) + timedelta(hours=1), {"a": 2})
    assert (later.state, at.state, later.queue) == (TaskState.SCHEDULED,) * 2 + ("pipes",)
    assert later.payload == {"a": 1}
    other = await pipeline.options(queue="other", task_id="fixed").aio.enqueue({})
    assert (other.queue, other.id) == ("other", "fixed")
    with pytest.raises(TypeError):
        pipeline.task(["not", "a", "dict"])  # type: ignore[arg-type]


def test_definitions_are_checked_up_front() -> None:
    app = App("memory://")

    def step(data: dict[str, Any]) -> dict[str, Any]:
        return data

    with pytest.raises(ConfigError):
        app.pipeline("p.none")
    with pytest.raises(ConfigError):
        reentrant(step, max_times=0)
    with pytest.raises(ConfigError):
        reentrant(step, sleep=-1)
    with pytest.raises(TypeError):
        app.pipeline("p.bad", "not a function")  # type: ignore[arg-type]
    app.pipeline("p.one", step)
    with pytest.raises(ConfigError):
        app.pipeline("p.one", step)
    wrapped = reentrant(step)
    assert wrapped({"a": 1}) == {"a": 1} and wrapped.fn is step
    assert reentrant(wrapped, max_times=7) == reentrant(step, max_times=7)


async def test_progress_of_another_definition_is_not_resumed(broker: Broker, app: App) -> None:
    def first(data: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("must not run")

    pipeline = app.pipeline("p.changed", first, max_retry=5)
    info = await pipeline.aio.enqueue({})
    [lease] = await broker.claim([info.queue], limit=1, lease_s=30)
    assert isinstance(broker, ProgressStore)
    other = Progress(next=1, data={})
    other.set_entry(0, StepLog(step="renamed", state=PipelineStepState.SUCCEEDED, attempts=1))
    await broker.save_progress(lease, other.encode())
    await broker.retry(lease, error="lease expired (worker lost)", delay_s=0)

    async with serving(Server(broker, **fast()), app.mux):
        archived = await wait_state(broker, info, TaskState.ARCHIVED)
    assert archived.last_error is not None
    assert "pipeline p.changed changed since this task's progress was stored" in (
        archived.last_error
    )
