"""ServeMux: routes each task to the handler whose pattern is the longest prefix of its type."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from conveyor.brokers.limits import TaskLimits
from conveyor.errors import ConfigError, UnknownTaskError
from conveyor.message import JSONValue, Task, validate_name
from conveyor.middleware import AsyncHandler, Handler, Middleware, compose
from conveyor.worker.context import TaskContext

__all__ = ["ServeMux"]

H = TypeVar("H", bound=Handler)

# Task types are few in practice, but they come from stored data: bound the lookup cache so a
# flood of distinct unknown types cannot grow it without limit.
_CACHE_LIMIT = 4096


class ServeMux:
    """A task router: the handler whose pattern is the longest prefix of the task type runs.

    With patterns ``"images:"`` and ``"images:thumbnails"``, a task of type
    ``"images:thumbnails:small"`` goes to the second and ``"images:resize"`` to the first. A type
    no pattern matches raises :class:`~conveyor.errors.UnknownTaskError` inside the attempt, so the
    task is retried and finally archived, never silently dropped. Middleware added with
    :meth:`use` wraps every handler (the unknown-type failure included).

    Example::

        mux = ServeMux()

        @mux.handler("email:")
        async def send_email(ctx: TaskContext, task: Task) -> None: ...

        Server("sqlite:///tasks.db").run(mux)
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._middleware: list[Middleware] = []
        self._compiled: dict[str, AsyncHandler] = {}
        self._routes: dict[str, str | None] = {}  # task type -> pattern (None: unknown)
        self._unknown: AsyncHandler | None = None
        self.task_limits: dict[str, TaskLimits] = {}
        """Flow-control limits per task type (``@app.task(rate_limit=...)``), written to the
        broker by a server when it starts serving this mux."""

    def handle(self, pattern: str, handler: Handler) -> None:
        """Route task types starting with ``pattern`` to ``handler`` (sync or async).

        Raises:
            InvalidNameError: ``pattern`` is not a valid task-type prefix.
            ConfigError: ``pattern`` already has a handler.
            TypeError: ``handler`` is not callable.
        """
        validate_name(pattern, what="handler pattern")
        if not callable(handler):
            raise TypeError(f"handler for {pattern!r} must be callable")
        if pattern in self._handlers:
            raise ConfigError(f"a handler is already registered for pattern {pattern!r}")
        self._handlers[pattern] = handler
        self._invalidate()

    def handler(self, pattern: str) -> Callable[[H], H]:
        """Decorator form of :meth:`handle`; returns the function unchanged."""

        def register(func: H) -> H:
            self.handle(pattern, func)
            return func

        return register

    def use(self, *middleware: Middleware) -> None:
        """Add middleware around every handler; the first added runs outermost.

        Raises:
            ConfigError: a middleware is not an async callable.
        """
        compose(middleware, _noop)  # validates before anything changes
        self._middleware.extend(middleware)
        self._invalidate()

    def match(self, task_type: str) -> str | None:
        """The pattern that routes ``task_type`` (the longest matching prefix), or ``None``."""
        try:
            return self._routes[task_type]
        except KeyError:
            pass
        best: str | None = None
        for pattern in self._handlers:
            if task_type.startswith(pattern) and (best is None or len(pattern) > len(best)):
                best = pattern
        if len(self._routes) < _CACHE_LIMIT:
            self._routes[task_type] = best
        return best

    async def __call__(self, ctx: TaskContext, task: Task) -> JSONValue:
        """Run the handler routed for ``task.type`` inside the middleware.

        Raises:
            UnknownTaskError: no pattern matches ``task.type``.
        """
        pattern = self.match(task.type)
        if pattern is None:
            if self._unknown is None:
                self._unknown = compose(self._middleware, _unknown_type)
            return await self._unknown(ctx, task)
        call = self._compiled.get(pattern)
        if call is None:
            call = self._compiled[pattern] = compose(self._middleware, self._handlers[pattern])
        return await call(ctx, task)

    def _invalidate(self) -> None:
        self._compiled.clear()
        self._routes.clear()
        self._unknown = None


async def _noop(ctx: TaskContext, task: Task) -> JSONValue:
    return None


async def _unknown_type(ctx: TaskContext, task: Task) -> JSONValue:
    raise UnknownTaskError(task.type)
