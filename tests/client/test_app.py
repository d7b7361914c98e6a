"""The App layer: typed task functions, argument binding, the mux, a real server run."""

from __future__ import annotations

import inspect
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor import (
    App,
    Broker,
    ConfigError,
    Inspector,
    InvalidNameError,
    PayloadError,
    ServeMux,
    Task,
    TaskState,
)
from support import wait_until

app = App("memory://test-app-module")


@app.task
def add(a: int, b: int = 2, *, scale: int = 1) -> int:
    return (a + b) * scale


@app.task(name="test.greet", queue="greetings", max_retry=3)
async def greet(name: str, *extra: str, **tags: str) -> str:
    return f"hello {name}"


def test_calling_a_task_function_runs_it() -> None:
    assert add(1, 2, scale=3) == 9
    assert add.name == "test_app.add"
    assert app.tasks["test.greet"] is greet


def test_enqueue_binds_arguments_into_a_json_payload() -> None:
    assert add.task(1).payload == {"a": 1}
    assert add.task(1, b=5, scale=2).payload == {"a": 1, "b": 5, "scale": 2}
    assert greet.task("ann", "x", "y", lang="fr").payload == {
        "name": "ann",
        "extra": ["x", "y"],
        "tags": {"lang": "fr"},
    }


def test_a_wrong_call_fails_at_enqueue() -> None:
    with pytest.raises(TypeError, match="missing a required argument"):
        add.enqueue()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword"):
        add.enqueue(1, c=3)  # type: ignore[call-arg]
    with pytest.raises(PayloadError, match="datetime"):
        add.enqueue(datetime.now(UTC))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown task option"):
        add.options(queu="x")  # type: ignore[call-arg]


def make_factory_app() -> App:
    """An app factory, as users write them: the tasks are local functions."""
    factory_app = App("memory://")

    @factory_app.task
    def send(to: str) -> str:
        return to

    @factory_app.task(queue="images")
    async def resize(width: int) -> int:
        return width

    return factory_app


def test_local_functions_get_a_stable_default_name() -> None:
    first, second = make_factory_app(), make_factory_app()
    # The <locals> part is dropped: valid, and the same in every process that calls the factory.
    names = ["test_app.make_factory_app.send", "test_app.make_factory_app.resize"]
    assert list(first.tasks) == names
    assert list(second.tasks) == names
    task = first.tasks["test_app.make_factory_app.send"].task("a@b.c")
    assert task.type == "test_app.make_factory_app.send"


def test_task_names_are_validated() -> None:
    local = App("memory://")

    def inner() -> None: ...

    def other() -> None: ...

    local.task(inner)
    assert "test_app.test_task_names_are_validated.inner" in local.tasks
    # Two functions whose default names collide: the second is refused, naming the way out.
    other.__qualname__ = inner.__qualname__
    with pytest.raises(ConfigError, match=r"already registered .*pass name="):
        local.task(other)
    local.task(name="inner")(inner)
    with pytest.raises(ConfigError, match="already registered"):
        local.task(name="inner")(inner)
    with pytest.raises(InvalidNameError):
        local.task(name="bad name")(inner)
    with pytest.raises(InvalidNameError, match="pass name="):
        local.task(lambda: None)


def test_enqueue_uses_decorator_and_call_options() -> None:
    shared = App("memory://test-app-options")

    @shared.task(name="t.send", queue="emails", max_retry=4)
    def send(to: str) -> None: ...

    try:
        plain = send.enqueue("a@b.c")
        later = send.enqueue_in(timedelta(minutes=5), "a@b.c")
        at = send.enqueue_at(datetime.now(UTC) + timedelta(hours=1), "x@y.z")
        custom = send.options(queue="critical", task_id="send-1").enqueue("a@b.c")
        # A raw Task through the app's client gets the decorator's defaults too.
        raw = shared.client.enqueue(Task("t.send", {"to": "q@r.s"}))
    finally:
        shared.close()
    assert (plain.queue, plain.max_retry, plain.payload) == ("emails", 4, {"to": "a@b.c"})
    assert later.state is at.state is TaskState.SCHEDULED
    assert (custom.queue, custom.id, custom.max_retry) == ("critical", "send-1", 4)
    assert raw.queue == "emails"


async def test_async_enqueue_from_async_code(broker: Broker) -> None:
    shared = App(broker)

    @shared.task(name="t.resize")
    async def resize(image_id: int) -> None: ...

    try:
        info = await resize.aio.enqueue(7)
        later = await resize.options(queue="images").aio.enqueue_in(60, 8)
        at = await resize.aio.enqueue_at(datetime.now(UTC) + timedelta(hours=1), 9)
    finally:
        await shared.aclose()
    assert info.payload == {"image_id": 7}
    assert (later.queue, later.state) == ("images", TaskState.SCHEDULED)
    assert at.state is TaskState.SCHEDULED
    assert (await broker.get_task("default", info.id)).type == "t.resize"


def test_mux_routes_registered_tasks() -> None:
    mux = app.mux
    assert isinstance(mux, ServeMux)
    assert mux.match("test.greet") == "test.greet"
    assert mux.match("test_app.add") == "test_app.add"
    assert app.mux is mux


def test_server_runs_sync_and_async_tasks_and_archives_bad_arguments(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    worker_app = App(url)
    threads: list[str] = []

    @worker_app.task(name="t.multiply", retention=60)
    def multiply(a: int, b: int) -> int:
        threads.append(threading.current_thread().name)
        return a * b

    @worker_app.task(name="t.shout", retention=60)
    async def shout(text: str) -> str:
        return text.upper()

    server = worker_app.server(concurrency=2, poll_interval=0.05)
    server.start(worker_app.mux)
    try:
        product = multiply.enqueue(6, 7)
        loud = shout.enqueue("hi")
        bad = worker_app.client.enqueue(Task("t.multiply", {"a": 1, "c": 2}))
        with Inspector(url) as inspector:

            def state(task_id: str) -> TaskState:
                return inspector.get_task("default", task_id).state

            wait_until(lambda: state(product.id) is TaskState.COMPLETED, within=10)
            wait_until(lambda: state(loud.id) is TaskState.COMPLETED, within=10)
            wait_until(lambda: state(bad.id) is TaskState.ARCHIVED, within=10)
            assert inspector.get_task("default", product.id).result == 42
            assert inspector.get_task("default", loud.id).result == "HI"
            assert "bad arguments" in (inspector.get_task("default", bad.id).last_error or "")
    finally:
        server.stop()
        worker_app.close()
    assert threads and threads[0] != threading.main_thread().name


def _everything(a: int, /, b: int = 0, *rest: int, c: int = 0, **extra: int) -> object:
    return (a, b, rest, c, extra)


def _defaults(a: int = 1, b: int = 2, c: int = 3) -> object:
    return (a, b, c)


@pytest.mark.parametrize(
    ("fn", "args", "kwargs"),
    [
        (_everything, (1,), {}),
        (_everything, (1, 2, 3, 4), {"c": 5, "z": 6}),
        (_everything, (1,), {"b": 2, "y": 7}),
        (_defaults, (), {"c": 9}),
        (_defaults, (5,), {"c": 9}),
        (_defaults, (), {}),
    ],
)
def test_payload_round_trips_to_the_same_call(
    fn: object, args: tuple[int, ...], kwargs: dict[str, int]
) -> None:
    import json

    from conveyor.task_function import _call_args, _Keywords, _payload

    assert callable(fn)
    signature = inspect.signature(fn)
    payload = json.loads(json.dumps(_payload(signature, "t", args, kwargs)))
    call_args, call_kwargs = _call_args(signature, payload)
    assert fn(*call_args, **call_kwargs) == fn(*args, **kwargs)
    keywords = _Keywords.of(signature)  # the worker's shortcut, where the signature allows it
    if keywords is not None:
        call_args, call_kwargs = _call_args(signature, payload, keywords)
        assert call_args == [] and fn(**call_kwargs) == fn(*args, **kwargs)


def _required(a: int, *, b: int, c: int = 0) -> object:
    return (a, b, c)


@pytest.mark.parametrize("shortcut", [False, True])
def test_stale_payload_is_rejected_on_the_worker_side(shortcut: bool) -> None:
    from conveyor.task_function import _call_args, _Keywords

    for fn in (_defaults, _required):
        signature = inspect.signature(fn)
        keywords = _Keywords.of(signature) if shortcut else None
        with pytest.raises(TypeError, match="unexpected"):
            _call_args(signature, {"a": 1, "b": 2, "d": 1}, keywords)
        with pytest.raises(TypeError, match="JSON object"):
            _call_args(signature, [1, 2], keywords)
    with pytest.raises(TypeError, match="missing"):
        _call_args(
            inspect.signature(_required), {"a": 1}, _Keywords.of(inspect.signature(_required))
        )
    assert _Keywords.of(inspect.signature(_everything)) is None
