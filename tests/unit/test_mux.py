"""ServeMux routing, middleware composition and the sync/async handler adapters."""

from __future__ import annotations

import asyncio
import threading

import pytest

from conveyor.errors import ConfigError, InvalidNameError, UnknownTaskError
from conveyor.message import JSONValue, Task
from conveyor.middleware import CallNext, as_async, compose, is_async_callable
from conveyor.mux import ServeMux
from conveyor.worker.context import TaskContext, current_context


def make_ctx(task: Task) -> TaskContext:
    return TaskContext(task_id="t1", queue="default", type=task.type)


async def dispatch(mux: ServeMux, task_type: str) -> JSONValue:
    task = Task(task_type)
    return await mux(make_ctx(task), task)


def route(name: str):
    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        return name

    return handler


async def test_longest_prefix_wins() -> None:
    mux = ServeMux()
    mux.handle("images:", route("images"))
    mux.handle("images:thumbnails", route("thumbnails"))
    mux.handle("email", route("email"))
    assert await dispatch(mux, "images:resize") == "images"
    assert await dispatch(mux, "images:thumbnails") == "thumbnails"
    assert await dispatch(mux, "images:thumbnails:small") == "thumbnails"
    assert await dispatch(mux, "email:welcome") == "email"
    assert mux.match("images:thumbnails:x") == "images:thumbnails"
    assert mux.match("video") is None


async def test_unmatched_type_raises_unknown_task_error() -> None:
    mux = ServeMux()
    mux.handle("images:", route("images"))
    with pytest.raises(UnknownTaskError) as info:
        await dispatch(mux, "video:encode")
    assert info.value.task_type == "video:encode"


async def test_decorator_registers_and_returns_the_function() -> None:
    mux = ServeMux()

    @mux.handler("ping")
    def ping(ctx: TaskContext, task: Task) -> str:
        return "pong"

    assert ping(make_ctx(Task("ping")), Task("ping")) == "pong"
    assert await dispatch(mux, "ping") == "pong"


def test_duplicate_and_invalid_patterns_are_refused() -> None:
    mux = ServeMux()
    mux.handle("a", route("a"))
    with pytest.raises(ConfigError):
        mux.handle("a", route("again"))
    with pytest.raises(InvalidNameError):
        mux.handle("", route("empty"))
    with pytest.raises(InvalidNameError):
        mux.handle("has space", route("space"))
    with pytest.raises(TypeError):
        mux.handle("b", "not callable")  # type: ignore[arg-type]


async def test_middleware_runs_in_order_around_the_handler() -> None:
    calls: list[str] = []

    def recorder(name: str):
        async def mw(ctx: TaskContext, task: Task, call_next: CallNext) -> JSONValue:
            calls.append(f"{name}:before")
            result = await call_next(ctx, task)
            calls.append(f"{name}:after")
            return result

        return mw

    mux = ServeMux()

    async def handler(ctx: TaskContext, task: Task) -> JSONValue:
        calls.append("handler")
        return 1

    mux.handle("job", handler)
    mux.use(recorder("outer"))
    mux.use(recorder("inner"))
    assert await dispatch(mux, "job") == 1
    assert calls == ["outer:before", "inner:before", "handler", "inner:after", "outer:after"]


async def test_middleware_also_wraps_unknown_types() -> None:
    seen: list[BaseException] = []

    async def catcher(ctx: TaskContext, task: Task, call_next: CallNext) -> JSONValue:
        try:
            return await call_next(ctx, task)
        except UnknownTaskError as exc:
            seen.append(exc)
            raise

    mux = ServeMux()
    mux.use(catcher)
    with pytest.raises(UnknownTaskError):
        await dispatch(mux, "nobody")
    assert len(seen) == 1


async def test_middleware_can_replace_the_task() -> None:
    async def rewrite(ctx: TaskContext, task: Task, call_next: CallNext) -> JSONValue:
        return await call_next(ctx, Task(task.type, {"wrapped": task.payload}))

    async def echo(ctx: TaskContext, task: Task) -> JSONValue:
        return task.payload

    call = compose([rewrite], echo)
    task = Task("echo", 5)
    assert await call(make_ctx(task), task) == {"wrapped": 5}


def test_sync_middleware_is_refused() -> None:
    def not_async(ctx: TaskContext, task: Task, call_next: CallNext) -> JSONValue:
        return None

    with pytest.raises(ConfigError):
        ServeMux().use(not_async)  # type: ignore[arg-type]


async def test_sync_handler_runs_off_the_event_loop_thread_with_its_context() -> None:
    loop_thread = threading.get_ident()
    seen: dict[str, object] = {}

    def blocking(ctx: TaskContext, task: Task) -> JSONValue:
        seen["thread"] = threading.get_ident()
        seen["ctx"] = current_context()
        return "done"

    async def middleware(ctx: TaskContext, task: Task, call_next: CallNext) -> JSONValue:
        return f"mw({await call_next(ctx, task)})"

    mux = ServeMux()
    mux.handle("sync", blocking)
    mux.use(middleware)
    task = Task("sync")
    ctx = make_ctx(task)
    from conveyor.worker.context import activate

    async def attempt() -> JSONValue:
        activate(ctx)
        return await mux(ctx, task)

    assert await asyncio.create_task(attempt()) == "mw(done)"
    assert seen["thread"] != loop_thread
    assert seen["ctx"] is ctx


def test_async_detection_covers_partials_and_callable_objects() -> None:
    import functools

    async def handler(ctx: TaskContext, task: Task, extra: int) -> JSONValue:
        return extra

    class Callable:
        async def __call__(self, ctx: TaskContext, task: Task) -> JSONValue:
            return None

    assert is_async_callable(functools.partial(handler, extra=1))
    assert is_async_callable(Callable())
    assert not is_async_callable(lambda ctx, task: None)
    with pytest.raises(TypeError):
        as_async(42)  # type: ignore[arg-type]


def test_current_context_outside_a_task_raises_lookup_error() -> None:
    with pytest.raises(LookupError):
        current_context()


def test_cancel_sets_the_flag_and_the_event_whenever_it_is_made() -> None:
    early = make_ctx(Task("x"))
    event = early.cancel_event
    assert not early.cancelled and not event.is_set()
    early.cancel()
    assert early.cancelled and event.is_set()

    late = make_ctx(Task("x"))
    late.cancel()
    assert late.cancelled
    assert late.cancel_event.is_set()
