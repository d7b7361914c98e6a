"""Handler and middleware types, and how they are put together.

A handler takes ``(ctx, task)`` and returns the task's JSON result. It may be ``async def`` (it
runs on the worker's event loop) or a plain ``def`` (it runs in the worker's thread pool, so it
never blocks the loop). Middleware is always ``async`` and wraps the next handler, call_next style::

    async def timing(ctx: TaskContext, task: Task, call_next: CallNext) -> JSONValue:
        started = time.monotonic()
        try:
            return await call_next(ctx, task)
        finally:
            log.info("%s took %.3fs", task.type, time.monotonic() - started)

``compose([a, b], handler)`` runs ``a`` outermost: a -> b -> handler -> b -> a. The innermost
``call_next`` runs a sync handler in the pool, so middleware works the same around both kinds.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

from conveyor.errors import ConfigError
from conveyor.message import JSONValue, Task
from conveyor.worker.context import TaskContext

__all__ = [
    "AsyncHandler",
    "CallNext",
    "ErrorHandler",
    "Handler",
    "Middleware",
    "SyncHandler",
    "as_async",
    "compose",
    "is_async_callable",
]

AsyncHandler: TypeAlias = Callable[[TaskContext, Task], Awaitable[JSONValue]]
"""``async def handler(ctx, task) -> JSONValue``: runs on the worker's event loop."""

SyncHandler: TypeAlias = Callable[[TaskContext, Task], JSONValue]
"""``def handler(ctx, task) -> JSONValue``: runs in the worker's thread pool."""

Handler: TypeAlias = AsyncHandler | SyncHandler
"""Either kind of handler (a :class:`~conveyor.mux.ServeMux` is an async handler)."""

CallNext: TypeAlias = AsyncHandler
"""What middleware calls to run the rest of the chain: ``await call_next(ctx, task)``."""

Middleware: TypeAlias = Callable[[TaskContext, Task, CallNext], Awaitable[JSONValue]]
"""``async def mw(ctx, task, call_next) -> JSONValue``: wraps the next handler."""

ErrorHandler: TypeAlias = Callable[[TaskContext, Task, BaseException], Awaitable[None] | None]
"""``error_handler(ctx, task, exc)``, sync or async, called on each failed attempt."""


def is_async_callable(obj: object) -> bool:
    """Whether calling ``obj`` returns a coroutine (async def, partials, async ``__call__``)."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - we want the method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def as_async(handler: Handler) -> AsyncHandler:
    """Return ``handler`` as an async handler; a sync one is wrapped to run off the event loop.

    The wrapper runs the sync handler through ``ctx.run_sync`` (the worker's thread pool, with the
    caller's contextvars copied so :func:`~conveyor.worker.context.current_context` works), or
    ``asyncio.to_thread`` when the context comes from outside a worker (tests).

    Raises:
        TypeError: ``handler`` is not callable.
    """
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__}")
    if is_async_callable(handler):
        return handler

    sync: SyncHandler = handler

    async def run_in_thread(ctx: TaskContext, task: Task) -> JSONValue:
        if ctx.run_sync is not None:
            return await ctx.run_sync(sync, ctx, task)
        return await asyncio.to_thread(sync, ctx, task)

    run_in_thread.__qualname__ = getattr(handler, "__qualname__", "sync_handler")
    return run_in_thread


def compose(middleware: Sequence[Middleware], handler: Handler) -> AsyncHandler:
    """Wrap ``handler`` in ``middleware``; the first middleware is the outermost.

    Raises:
        ConfigError: a middleware is not an async callable.
        TypeError: ``handler`` is not callable.
    """
    call = as_async(handler)
    for mw in reversed(middleware):
        if not is_async_callable(mw):
            raise ConfigError(f"middleware must be async: {mw!r}")
        call = _bind(mw, call)
    return call


def _bind(mw: Middleware, call_next: CallNext) -> AsyncHandler:
    async def call(ctx: TaskContext, task: Task) -> JSONValue:
        return await mw(ctx, task, call_next)

    return call
