"""TaskContext: what a handler knows about the attempt it is running, and how it learns to stop."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from conveyor.headers import EMPTY_HEADERS

if TYPE_CHECKING:
    from conveyor.brokers.protocol import Broker
    from conveyor.message import JSONValue, Lease, Task

__all__ = ["TaskContext", "current_context"]

SyncRunner = Callable[
    [Callable[["TaskContext", "Task"], "JSONValue"], "TaskContext", "Task"],
    Awaitable["JSONValue"],
]
"""Runs a sync handler off the event loop and awaits its result (the worker's thread pool)."""

_current: contextvars.ContextVar[TaskContext] = contextvars.ContextVar("conveyor_task_context")


@dataclass(eq=False, slots=True, kw_only=True)
class TaskContext:
    """The attempt a handler runs: which task, how many tries so far, and whether to stop.

    The worker sets :attr:`cancel_event` when the attempt must end early: its lease was lost, its
    timeout or deadline passed, an operator cancelled it (``Inspector.cancel_task``), or the
    worker is shutting down past its grace period. An async
    handler is also cancelled; a sync handler cannot be interrupted, so long-running sync code
    should check :attr:`cancelled` (or ``ctx.cancel_event.wait(seconds)``) between steps. The
    worker gives it a second to return (then its thread goes back to the pool) before abandoning
    its thread; the attempt ends as it was stopped either way.

    Example::

        def handler(ctx: TaskContext, task: Task) -> None:
            for chunk in chunks(task.payload):
                if ctx.cancelled:
                    return
                process(chunk)

    Attributes:
        task_id: the task's id.
        queue: the queue it was claimed from.
        type: the task type.
        retry_count: failed attempts before this one (``TaskInfo.retried``).
        max_retry: how many retries the task allows in all.
        deadline: when the task must be done by (aware UTC), or ``None``.
        lease: the attempt's lease (``None`` outside a worker); pipelines fence their
            progress writes with it.
        broker: the worker's broker (``None`` outside a worker).
        parent_result: for a workflow step, its parent's result (a chord body: the list of
            the header's results); ``None`` for a first or immutable step.
        parent_error: for an error callback, the last error of the task that failed.
        claimed_at: when the broker claimed this attempt, by the broker's clock (aware UTC);
            ``None`` outside a worker. Rate limits count claims, so this is the time they see.
    """

    task_id: str
    queue: str
    type: str
    retry_count: int = 0
    max_retry: int = 0
    deadline: datetime | None = None
    parent_result: JSONValue = None
    parent_error: str | None = None
    # For a workflow step: the value a task function receives prepended to its arguments (its
    # parent's result, or an error callback's error); empty when it receives none.
    parent_arg: tuple[JSONValue, ...] = field(default=(), repr=False)
    claimed_at: datetime | None = None
    # How sync handlers reach the worker's thread pool; None outside a worker (asyncio.to_thread).
    run_sync: SyncRunner | None = field(default=None, repr=False)
    # The attempt's lease and the worker's broker, None outside a worker: a pipeline stores its
    # progress through them, fenced by the lease (conveyor.workflows.pipeline).
    lease: Lease | None = field(default=None, repr=False)
    broker: Broker | None = field(default=None, repr=False)
    # The event is made on first use: most handlers never look, and a threading.Event costs a
    # Condition and a lock per task, a measurable share of a no-op task's cost.
    _cancel_event: threading.Event | None = field(default=None, init=False, repr=False)
    _cancelled: bool = field(default=False, init=False, repr=False)

    @property
    def headers(self) -> Mapping[str, str]:
        """The task's headers, read-only (empty when it has none, or outside a worker)."""
        # Read from the lease's task on demand: a task without headers costs nothing here.
        return EMPTY_HEADERS if self.lease is None else self.lease.task.headers

    @property
    def cancelled(self) -> bool:
        """Whether the attempt has been asked to stop (lease lost, timeout, cancel, shutdown)."""
        return self._cancelled

    @property
    def cancel_event(self) -> threading.Event:
        """A ``threading.Event`` set when the attempt should stop; sync handlers can wait on it."""
        with _event_lock:
            if self._cancel_event is None:
                self._cancel_event = threading.Event()
                if self._cancelled:
                    self._cancel_event.set()
            return self._cancel_event

    def cancel(self) -> None:
        """Ask the handler to stop: sets :attr:`cancelled` and :attr:`cancel_event`.

        The worker calls this; a handler has no need to.
        """
        with _event_lock:
            self._cancelled = True
            if self._cancel_event is not None:
                self._cancel_event.set()


# Guards the lazy creation of cancel events against a handler thread racing the worker's cancel.
_event_lock = threading.Lock()


def current_context() -> TaskContext:
    """Return the context of the task running in this asyncio task or handler thread.

    Raises:
        LookupError: when called outside a task handler.
    """
    try:
        return _current.get()
    except LookupError:
        raise LookupError("current_context() called outside a conveyor task handler") from None


def activate(ctx: TaskContext) -> contextvars.Token[TaskContext]:
    """Make ``ctx`` the current context of the running asyncio task (used by the executor)."""
    return _current.set(ctx)


def context_or_none() -> TaskContext | None:
    """The running task's context, or ``None`` outside a task (cheap: no exception)."""
    return _current.get(None)
