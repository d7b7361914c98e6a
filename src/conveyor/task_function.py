"""Typed task functions: what ``@app.task`` returns, and how its arguments become a payload.

A :class:`TaskFunction` wraps a plain function (sync or async): calling it still runs the
function; ``.enqueue(...)`` takes the *same arguments*, checks them against the signature (mypy
through ``ParamSpec``, and ``inspect.Signature.bind`` at run time) and enqueues a task whose JSON
payload is the bound arguments, by parameter name. Its :meth:`~TaskFunction.handler` turns such
a payload back into the call on the worker. :class:`~conveyor.app.App` registers them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Generic, ParamSpec, TypeVar, Unpack

from conveyor.errors import PayloadError, SkipRetry, UnknownTaskError
from conveyor.message import JSONValue, Task, TaskInfo, encode_json
from conveyor.middleware import Handler
from conveyor.options import DefaultOptions, Duration, EnqueueOptions, parse_options
from conveyor.worker.context import TaskContext
from conveyor.workflows.arguments import prepend_parent, with_room_for_parent
from conveyor.workflows.canvas import Signature

if TYPE_CHECKING:
    from conveyor.app import App

__all__ = ["AsyncTaskCall", "TaskCall", "TaskFunction", "default_task_name"]

P = ParamSpec("P")
R = TypeVar("R")


def _payload(
    signature: inspect.Signature, name: str, args: tuple[object, ...], kwargs: Mapping[str, object]
) -> JSONValue:
    """Bind a call to ``signature`` and return the arguments as a JSON object, by parameter name.

    Raises:
        TypeError: the arguments do not fit the signature (as calling the function would).
    """
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{name}{signature}: {exc}") from None
    params = signature.parameters
    return {
        key: list(value) if params[key].kind is inspect.Parameter.VAR_POSITIONAL else value
        for key, value in bound.arguments.items()
    }


_BY_NAME = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class _Keywords:
    """For a signature whose parameters can all be passed by name: which names, which required.

    Such a payload is the keyword arguments as they stand, so the worker checks two sets
    instead of binding the signature for every task (a measurable share of a no-op's cost).
    """

    def __init__(self, signature: inspect.Signature) -> None:
        params = signature.parameters.values()
        self.names = frozenset(p.name for p in params)
        self.required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty)

    @staticmethod
    def of(signature: inspect.Signature) -> _Keywords | None:
        """The sets for ``signature``, or ``None`` if some parameter cannot go by name."""
        if all(p.kind in _BY_NAME for p in signature.parameters.values()):
            return _Keywords(signature)
        return None


def _call_args(
    signature: inspect.Signature, payload: JSONValue, keywords: _Keywords | None = None
) -> tuple[list[JSONValue], dict[str, JSONValue]]:
    """Rebuild positional and keyword arguments from a payload made by :func:`_payload`."""
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a JSON object of arguments, not {type(payload).__name__}")
    names = signature.parameters.keys() if keywords is None else keywords.names
    unknown = payload.keys() - names
    if unknown:
        raise TypeError(f"unexpected arguments {sorted(unknown)}")
    if keywords is not None:
        missing = keywords.required - payload.keys()
        if missing:
            raise TypeError(f"missing required arguments {sorted(missing)}")
        return [], payload
    args: list[JSONValue] = []
    kwargs: dict[str, JSONValue] = {}
    positional = True  # stays True while every earlier positional parameter was given
    for param in signature.parameters.values():
        kind = param.kind
        if param.name not in payload:
            if kind is not inspect.Parameter.VAR_POSITIONAL:
                positional = positional and kind is inspect.Parameter.VAR_KEYWORD
            continue
        value = payload[param.name]
        if kind is inspect.Parameter.VAR_POSITIONAL:
            args.extend(value if isinstance(value, list) else [value])
        elif kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(value if isinstance(value, dict) else {})
        elif kind is inspect.Parameter.POSITIONAL_ONLY or (
            positional and kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ):
            args.append(value)
        else:
            positional = False
            kwargs[param.name] = value
    signature.bind(*args, **kwargs)  # a stale or hand-written payload fails here, clearly
    return args, kwargs


class AsyncTaskCall(Generic[P]):
    """Async enqueue methods of a task function (``fn.aio`` or ``fn.options(...).aio``).

    They use the app's :class:`~conveyor.client.AsyncClient`, bound to the event loop that first
    uses it: call them from your application's one event loop.
    """

    def __init__(self, app: App, build: Callable[P, Task], options: EnqueueOptions) -> None:
        self._app = app
        self._build = build
        self._options = options

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskInfo:
        """Enqueue a call with these arguments; see :meth:`TaskFunction.enqueue`."""
        task = self._build(*args, **kwargs)
        return await self._app.async_client.enqueue(task, **self._options)

    async def enqueue_in(self, delay: Duration, /, *args: P.args, **kwargs: P.kwargs) -> TaskInfo:
        """Enqueue a call to run ``delay`` from now; see :meth:`TaskFunction.enqueue_in`."""
        task = self._build(*args, **kwargs)
        return await self._app.async_client.enqueue_in(delay, task, **self._options)

    async def enqueue_at(self, when: datetime, /, *args: P.args, **kwargs: P.kwargs) -> TaskInfo:
        """Enqueue a call to run at ``when``; see :meth:`TaskFunction.enqueue_at`."""
        task = self._build(*args, **kwargs)
        return await self._app.async_client.enqueue_at(when, task, **self._options)


class TaskCall(Generic[P]):
    """A task function with per-call options bound: ``fn.options(queue="critical")``."""

    def __init__(self, app: App, build: Callable[P, Task], options: EnqueueOptions) -> None:
        parse_options(options)  # fail at .options(...), not at the later enqueue
        self._app = app
        self._build = build
        self._options = options

    @property
    def aio(self) -> AsyncTaskCall[P]:
        """The async twins of the enqueue methods, with the same options."""
        return AsyncTaskCall(self._app, self._build, self._options)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskInfo:
        """Enqueue a call with these arguments; see :meth:`TaskFunction.enqueue`."""
        return self._app.client.enqueue(self._build(*args, **kwargs), **self._options)

    def enqueue_in(self, delay: Duration, /, *args: P.args, **kwargs: P.kwargs) -> TaskInfo:
        """Enqueue a call to run ``delay`` from now; see :meth:`TaskFunction.enqueue_in`."""
        task = self._build(*args, **kwargs)
        return self._app.client.enqueue_in(delay, task, **self._options)

    def enqueue_at(self, when: datetime, /, *args: P.args, **kwargs: P.kwargs) -> TaskInfo:
        """Enqueue a call to run at ``when``; see :meth:`TaskFunction.enqueue_at`."""
        task = self._build(*args, **kwargs)
        return self._app.client.enqueue_at(when, task, **self._options)


class TaskFunction(Generic[P, R]):
    """A function registered with ``@app.task``: call it directly, or enqueue calls to it.

    Attributes:
        app: the :class:`App` it belongs to.
        name: the task type (``module.qualname`` unless ``name=`` was given).
        fn: the original function.
        defaults: the decorator's options (defaults for every enqueue of this task).
    """

    def __init__(self, app: App, fn: Callable[P, R], name: str, defaults: DefaultOptions) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.defaults = defaults
        self._signature = inspect.signature(fn)
        self._keywords = _Keywords.of(self._signature)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<TaskFunction {self.name}{self._signature}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function now, in this process (no queue involved)."""
        return self.fn(*args, **kwargs)

    def task(self, *args: P.args, **kwargs: P.kwargs) -> Task:
        """Build the :class:`~conveyor.message.Task` for a call, e.g. for ``enqueue_many``.

        Raises:
            TypeError: the arguments do not fit the function's signature.
        """
        return Task(self.name, _payload(self._signature, self.name, args, kwargs))

    def options(self, **options: Unpack[EnqueueOptions]) -> TaskCall[P]:
        """Bind per-call options (queue, timeout, task_id, unique...) for the next enqueue.

        Example::

            send_welcome.options(queue="critical", task_id="welcome-42").enqueue(42)

        Raises:
            TypeError: an unknown option; ConfigError: a bad option value.
        """
        return TaskCall(self.app, self.task, options)

    @property
    def aio(self) -> AsyncTaskCall[P]:
        """Async enqueue methods with the same names: ``await fn.aio.enqueue(...)``.

        The async API keeps the plain names (no ``_async`` suffix) on its own object, as
        ``AsyncClient`` does beside ``Client``.
        """
        return AsyncTaskCall(self.app, self.task, {})

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskInfo:
        """Enqueue a call with these arguments, through the app's sync client.

        Raises:
            TypeError: the arguments do not fit the signature.
            PayloadError: (a ``TypeError``) an argument is not JSON; the message names it.
            The other errors of :meth:`conveyor.client.AsyncClient.enqueue`.
        """
        return self.app.client.enqueue(self.task(*args, **kwargs))

    def enqueue_in(self, delay: Duration, /, *args: P.args, **kwargs: P.kwargs) -> TaskInfo:
        """Enqueue a call to run ``delay`` (seconds or timedelta) from now (broker clock)."""
        return self.app.client.enqueue_in(delay, self.task(*args, **kwargs))

    def enqueue_at(self, when: datetime, /, *args: P.args, **kwargs: P.kwargs) -> TaskInfo:
        """Enqueue a call to run at ``when`` (aware datetime; naive is taken as UTC)."""
        return self.app.client.enqueue_at(when, self.task(*args, **kwargs))

    def _arguments(self, task: Task) -> tuple[list[JSONValue], dict[str, JSONValue]]:
        if task.type != self.name:
            # The mux routes by prefix; this function answers only to its own exact name.
            raise UnknownTaskError(task.type)
        try:
            return _call_args(self._signature, task.payload, self._keywords)
        except (TypeError, PayloadError) as exc:
            # Retrying cannot fix arguments that do not fit: archive at once, with the reason.
            raise SkipRetry(f"bad arguments for {self.name}{self._signature}: {exc}") from exc

    def s(self, *args: object, **kwargs: object) -> Signature:
        """A workflow signature of a call that receives its parent's result first.

        Checked with room for the parent's result: ``mul.s(4)`` for ``mul(a, b)`` is valid (the
        parent fills ``a``). Example::

            chain(add.s(1, 2), mul.s(4)).enqueue()     # mul(add(1, 2), 4)

        Raises:
            TypeError: the call is wrong whatever the parent passes (too many arguments, an
                unknown keyword), or an argument is not JSON.
        """
        alone, with_parent = with_room_for_parent(self._signature, self.name, args, kwargs)
        encode_json([alone, with_parent], what="arguments")  # a non-JSON argument, by name
        return Signature(
            self.name,
            alone,
            False,
            True,
            {},
            parent_payload=with_parent,
            fits_alone=alone is not None,
            fits_parent=with_parent is not None,
            enqueuer=self.app,
        )

    def si(self, *args: object, **kwargs: object) -> Signature:
        """An immutable workflow signature: the call as given, ignoring its parent's result.

        Raises:
            TypeError: the arguments do not fit the function's signature.
        """
        payload = _payload(self._signature, self.name, args, kwargs)
        encode_json(payload, what="arguments")  # a non-JSON argument fails here, by name
        return Signature(self.name, payload, True, True, {}, enqueuer=self.app)

    def _with_parent(self, ctx: TaskContext, task: Task) -> Task:
        if not ctx.parent_arg or not isinstance(task.payload, dict):
            return task
        return Task(task.type, prepend_parent(self._signature, task.payload, ctx.parent_arg[0]))

    def handler(self) -> Handler:
        """The worker handler for this task: sync for a sync function (runs in the thread pool)."""
        fn: Callable[..., object] = self.fn
        if inspect.iscoroutinefunction(fn):

            async def run_async(ctx: TaskContext, task: Task) -> JSONValue:
                args, kwargs = self._arguments(self._with_parent(ctx, task))
                return await fn(*args, **kwargs)

            return run_async

        def run_sync(ctx: TaskContext, task: Task) -> JSONValue:
            args, kwargs = self._arguments(self._with_parent(ctx, task))
            return fn(*args, **kwargs)

        return run_sync


def default_task_name(fn: Callable[..., object]) -> str:
    """The task type ``@app.task`` gives ``fn`` without ``name=``: ``module.qualname``.

    The ``<locals>`` parts of a nested function's qualified name are dropped, so a task defined
    inside an app factory (``make_app.<locals>.send``) gets the valid, stable name
    ``module.make_app.send``, the same in every process that calls the factory.
    """
    qualname = getattr(fn, "__qualname__", "") or getattr(fn, "__name__", "")
    parts = [part for part in qualname.split(".") if part != "<locals>"]
    return ".".join([fn.__module__, *parts])
