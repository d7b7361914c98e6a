"""Pipelines: one task running a list of steps, resuming after the last step that finished.

A step is a function taking a dict and returning a dict (sync or async). The pipeline passes the
task's arguments to the first step and each step's dict to the next; the last dict is the task's
result. After every step the pipeline stores, in the broker and fenced by the lease, the step
reached and the dict it produced (:mod:`conveyor.progress`), so when the task runs again (a
retry, a redelivery after a crash, an inspector ``run``) it starts at the first step that did not
finish: a step that finished never runs again.

Steps are *non-reentrant* by default: running one twice may do harm (a payment). Before such a
step runs, "started" is stored; if it raises, the task is archived at once; if its worker dies
inside it, the next run finds "started" without "finished" and archives the task as
"interrupted in non-reentrant step NAME", for a person to decide (``Inspector.run_task``
resumes it at that step). A step wrapped in :func:`reentrant` may run again: when it raises it is
retried in place, and after ``max_times`` tries the task fails as any task does (retried with
backoff per ``max_retry``, resuming at that step).

Example::

    checkout = app.pipeline(
        "orders.checkout",
        reserve_stock,
        reentrant(fetch_quote, max_times=5, sleep=0.5),
        charge_card,              # never run twice
        queue="orders",
    )
    checkout.enqueue({"order_id": 42})
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, Unpack

from conveyor.backoff import ReconnectBackoff
from conveyor.brokers.progress import ProgressStore
from conveyor.errors import (
    BrokerUnavailableError,
    ConfigError,
    HandlerSignal,
    PayloadError,
    PayloadTooLargeError,
    SkipRetry,
    UnknownTaskError,
)
from conveyor.message import JSONValue, Lease, Task, TaskInfo, encode_json
from conveyor.middleware import AsyncHandler, is_async_callable
from conveyor.options import DefaultOptions, Duration, EnqueueOptions
from conveyor.progress import PipelineStepState, Progress, StepLog
from conveyor.task_function import AsyncTaskCall, TaskCall
from conveyor.worker.context import TaskContext
from conveyor.worker.executor import error_text

if TYPE_CHECKING:
    from conveyor.app import App

__all__ = ["Pipeline", "ReentrantStep", "StepFunction", "reentrant"]

logger = logging.getLogger(__name__)

StepFunction: TypeAlias = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]
"""A pipeline step: takes the previous step's dict (the task's arguments for the first one)."""

# How long a progress write keeps trying through a broker outage before the attempt fails
# (it is then retried, and resumes from what was stored).
_SAVE_PATIENCE_S = 10.0


@dataclass(frozen=True, slots=True)
class ReentrantStep:
    """A step that may run again: retried in place when it raises (see :func:`reentrant`).

    Calling it calls the wrapped function.

    Attributes:
        fn: the wrapped step, unchanged.
        max_times: tries per run of the task before the task fails (at least 1).
        sleep_s: seconds between tries.
    """

    fn: StepFunction
    max_times: int
    sleep_s: float

    def __call__(self, data: dict[str, Any]) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """Call the wrapped step."""
        return self.fn(data)


def reentrant(
    fn: StepFunction, max_times: int = 3, sleep: float | timedelta = 0.1
) -> ReentrantStep:
    """Mark a pipeline step as safe to run again, and retry it in place when it raises.

    Returns a new step; ``fn`` itself is unchanged.

    Example::

        app.pipeline("sync.contacts", reentrant(fetch_contacts, max_times=5, sleep=1.0), save)

    Args:
        fn: the step (sync or async), ``(dict) -> dict``.
        max_times: tries per run of the task; after the last, the task fails and is retried
            with backoff per its ``max_retry``, resuming at this step.
        sleep: pause between tries (seconds or ``timedelta``).

    Raises:
        ConfigError: ``max_times`` is below 1 or ``sleep`` is negative.
        TypeError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"reentrant() needs a function, not {type(fn).__name__}")
    sleep_s = sleep.total_seconds() if isinstance(sleep, timedelta) else float(sleep)
    if isinstance(max_times, bool) or not isinstance(max_times, int) or max_times < 1:
        raise ConfigError(f"max_times must be an integer >= 1, got {max_times!r}")
    if not sleep_s >= 0:
        raise ConfigError(f"sleep must be >= 0, got {sleep!r}")
    inner = fn.fn if isinstance(fn, ReentrantStep) else fn  # re-wrapping replaces the settings
    return ReentrantStep(inner, max_times, sleep_s)


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    fn: StepFunction
    is_async: bool
    retry: ReentrantStep | None  # None: non-reentrant


def _step(item: StepFunction | ReentrantStep) -> _Step:
    if not callable(item):
        raise TypeError(f"a pipeline step must be a function, not {type(item).__name__}")
    fn = item.fn if isinstance(item, ReentrantStep) else item
    name = getattr(fn, "__name__", None) or type(fn).__name__
    retry = item if isinstance(item, ReentrantStep) else None
    return _Step(name=name, fn=fn, is_async=is_async_callable(fn), retry=retry)


class Pipeline:
    """A registered pipeline (:meth:`conveyor.App.pipeline`): enqueue it like a task function.

    Attributes:
        app: the app it belongs to.
        name: its task type.
        steps: the step names, in order.
        defaults: the options it was registered with.
    """

    def __init__(
        self,
        app: App,
        name: str,
        steps: tuple[StepFunction | ReentrantStep, ...],
        defaults: DefaultOptions,
    ) -> None:
        if not steps:
            raise ConfigError(f"pipeline {name!r} needs at least one step")
        self.app = app
        self.name = name
        self.defaults = defaults
        self._steps = tuple(_step(s) for s in steps)
        self.steps = tuple(s.name for s in self._steps)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name} {' -> '.join(self.steps)}>"

    # -- producing -----------------------------------------------------------------------------

    def task(self, args: Mapping[str, JSONValue]) -> Task:
        """The :class:`~conveyor.message.Task` running this pipeline on ``args``.

        Raises:
            TypeError: ``args`` is not a mapping with string keys.
        """
        if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
            raise TypeError(f"pipeline {self.name} takes a dict with str keys, not {args!r:.80}")
        return Task(self.name, dict(args))

    def options(self, **options: Unpack[EnqueueOptions]) -> TaskCall[[Mapping[str, JSONValue]]]:
        """Bind per-call options (queue, task_id, retention...) for the next enqueue."""
        return TaskCall(self.app, self.task, options)

    @property
    def aio(self) -> AsyncTaskCall[[Mapping[str, JSONValue]]]:
        """Async enqueue methods with the same names: ``await pipeline.aio.enqueue({...})``."""
        return AsyncTaskCall(self.app, self.task, {})

    def enqueue(self, args: Mapping[str, JSONValue]) -> TaskInfo:
        """Enqueue a run of the pipeline on ``args`` (the first step's dict).

        Raises:
            TypeError: ``args`` is not a dict with string keys.
            PayloadError: (a ``TypeError``) a value is not JSON.
            The other errors of :meth:`conveyor.client.AsyncClient.enqueue`.
        """
        return self.app.client.enqueue(self.task(args))

    def enqueue_in(self, delay: Duration, args: Mapping[str, JSONValue]) -> TaskInfo:
        """Enqueue a run to start ``delay`` (seconds or timedelta) from now (broker clock)."""
        return self.app.client.enqueue_in(delay, self.task(args))

    def enqueue_at(self, when: datetime, args: Mapping[str, JSONValue]) -> TaskInfo:
        """Enqueue a run to start at ``when`` (aware datetime; naive is taken as UTC)."""
        return self.app.client.enqueue_at(when, self.task(args))

    # -- running -------------------------------------------------------------------------------

    def handler(self) -> AsyncHandler:
        """The worker handler running this pipeline (registered in the app's mux)."""
        return self._run

    async def _run(self, ctx: TaskContext, task: Task) -> JSONValue:
        if task.type != self.name:
            # The mux routes by prefix; a pipeline answers only to its own exact name.
            raise UnknownTaskError(task.type)
        store, lease = self._store(ctx)
        if not isinstance(task.payload, dict):
            raise SkipRetry(f"pipeline {self.name} takes a JSON object, not {task.payload!r:.80}")
        progress = await self._load(store, lease)
        if progress.started is not None:
            await self._interrupted(store, lease, progress)
        data: dict[str, Any] = task.payload if progress.next == 0 else (progress.data or {})
        for index in range(progress.next, len(self._steps)):
            data = await self._run_step(ctx, task, store, lease, progress, index, data)
        return data

    def _store(self, ctx: TaskContext) -> tuple[ProgressStore, Lease]:
        broker, lease = ctx.broker, ctx.lease
        if lease is None or not isinstance(broker, ProgressStore):
            raise SkipRetry(f"pipeline {self.name} needs a worker whose broker stores progress")
        return broker, lease

    async def _load(self, store: ProgressStore, lease: Lease) -> Progress:
        raw = await store.load_progress(lease.task.queue, lease.task.id)
        if raw is None:
            return Progress()
        try:
            progress = Progress.decode(raw)
        except PayloadError as exc:
            raise SkipRetry(f"pipeline {self.name}: {exc}") from None
        # Progress stored by another definition of this pipeline cannot be resumed safely.
        stored = [e.step for e in progress.log[: len(self._steps)]]
        if progress.next > len(self._steps) or stored != list(self.steps[: len(stored)]):
            raise SkipRetry(
                f"pipeline {self.name} changed since this task's progress was stored "
                f"(steps {stored}, now {list(self.steps)})"
            )
        return progress

    async def _interrupted(self, store: ProgressStore, lease: Lease, progress: Progress) -> None:
        index = progress.started
        assert index is not None
        name = self.steps[index] if index < len(self.steps) else f"#{index}"
        entry = progress.entry(index, name)
        progress.set_entry(index, replace(entry, state=PipelineStepState.INTERRUPTED))
        await self._save(store, lease, progress)
        raise SkipRetry(f"interrupted in non-reentrant step {name}")

    async def _run_step(
        self,
        ctx: TaskContext,
        task: Task,
        store: ProgressStore,
        lease: Lease,
        progress: Progress,
        index: int,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        step = self._steps[index]
        entry = progress.entry(index, step.name)
        if step.retry is None:
            # "Started" is stored before the step runs: a run that finds it without "finished"
            # knows the step may have had effects, and leaves the decision to a person.
            entry = replace(entry, state=PipelineStepState.RUNNING, attempts=entry.attempts + 1)
            progress.started = index
            progress.set_entry(index, entry)
            await self._save(store, lease, progress)
            try:
                out = await self._call(ctx, task, step, data)
            except Exception as exc:
                error = error_text(exc)
                # "started" stays: if this record is all that survives (the worker dies before
                # archiving), the next run archives the task as interrupted, never re-runs it.
                progress.set_entry(
                    index, replace(entry, state=PipelineStepState.FAILED, error=error)
                )
                await self._save(store, lease, progress)
                raise SkipRetry(f"non-reentrant step {step.name} failed: {error}") from exc
        else:
            out, entry = await self._retry_in_place(ctx, task, store, lease, progress, index, data)
        progress.next, progress.data, progress.started = index + 1, out, None
        progress.set_entry(index, replace(entry, state=PipelineStepState.SUCCEEDED))
        await self._save(store, lease, progress)
        return out

    async def _retry_in_place(
        self,
        ctx: TaskContext,
        task: Task,
        store: ProgressStore,
        lease: Lease,
        progress: Progress,
        index: int,
        data: dict[str, Any],
    ) -> tuple[dict[str, Any], StepLog]:
        step = self._steps[index]
        assert step.retry is not None
        entry = progress.entry(index, step.name)
        for tries in range(1, step.retry.max_times + 1):
            entry = replace(entry, attempts=entry.attempts + 1)
            try:
                return await self._call(ctx, task, step, data), entry
            except Exception as exc:
                entry = replace(entry, state=PipelineStepState.FAILED, error=error_text(exc))
                # SkipRetry / Retry steer the task, not the step: they end the in-place tries.
                if tries == step.retry.max_times or isinstance(exc, HandlerSignal):
                    progress.set_entry(index, entry)
                    await self._save(store, lease, progress)
                    raise
                logger.warning(
                    "pipeline %s: step %s failed (%s); try %d of %d in %.1fs",
                    self.name,
                    step.name,
                    entry.error,
                    tries + 1,
                    step.retry.max_times,
                    step.retry.sleep_s,
                    extra={"task_id": lease.task.id, "queue": lease.task.queue},
                )
                await asyncio.sleep(step.retry.sleep_s)
        raise AssertionError("unreachable: the last try returns or raises")

    async def _call(
        self, ctx: TaskContext, task: Task, step: _Step, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Run one step; return its dict exactly as a resumed run would read it back."""
        arg = copy.deepcopy(data)  # a step changing its argument must not change what is stored
        if step.is_async:
            out = await step.fn(arg)  # type: ignore[misc]
        elif ctx.run_sync is not None:
            out = await ctx.run_sync(lambda _c, _t: step.fn(arg), ctx, task)
        else:
            out = await asyncio.to_thread(step.fn, arg)
        if not isinstance(out, dict):
            raise TypeError(f"step {step.name} returned {type(out).__name__}, not a dict")
        encoded = encode_json(out, what=f"dict returned by step {step.name}")
        cap = self.app.max_payload_bytes
        if len(encoded) > cap:
            raise PayloadTooLargeError(size=len(encoded), limit=cap)
        # Decoded again so the next step gets what a resumed run would (JSON keys are strings).
        decoded: dict[str, Any] = json.loads(encoded)
        return decoded

    async def _save(self, store: ProgressStore, lease: Lease, progress: Progress) -> None:
        """Store the progress, fenced; a short broker outage is waited out, a lost lease is not."""
        raw = progress.encode()
        backoff = ReconnectBackoff(cap_s=1.0)
        give_up_at = time.monotonic() + _SAVE_PATIENCE_S
        while True:
            try:
                await store.save_progress(lease, raw)
                return
            except BrokerUnavailableError:
                if time.monotonic() >= give_up_at:
                    raise
                await asyncio.sleep(backoff.next_delay())
