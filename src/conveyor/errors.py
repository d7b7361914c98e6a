"""Every exception conveyor raises, in one shallow tree.

::

    ConveyorError
    ├── ConfigError (ValueError)             bad option, URL or name
    │   └── InvalidNameError                 task type / queue / id breaks the naming rule
    ├── BrokerError
    │   ├── BrokerUnavailableError           cannot reach the broker (retry later)
    │   └── LeaseLostError                   the lease expired or was taken over (fencing)
    ├── TaskError
    │   ├── UnknownTaskError                 no handler matches the task type
    │   ├── PayloadError (TypeError)         payload is not JSON-serialisable / not decodable
    │   ├── PayloadTooLargeError (ValueError) payload exceeds the size cap
    │   └── HeadersError (ValueError)        task headers are not small str -> str metadata
    ├── DuplicateTaskError                   a unique task with the same key is live
    ├── TaskIdConflictError                  a task with the same id already exists in the queue
    ├── TaskNotFoundError                    no such task in that queue
    ├── TaskNotActiveError                   cancel_task on a task no worker is running
    ├── QueueFullError                       the queue's length limit is reached
    ├── QueueNotEmptyError                   delete_queue without force on a queue holding tasks
    ├── QueueInUseError                      delete_queue on a queue with an active (leased) task
    ├── ProtocolError (ValueError)           a server client sent a request that cannot be served
    ├── ScheduleNotFoundError (LookupError)  no schedule entry with that name
    ├── ResultTimeoutError                   waiting for a result took too long
    ├── TaskFailedError                      the awaited task was archived / workflow failed
    └── WorkflowNotFoundError                no such workflow (never stored, or purged)

Control flow raised *by handlers* lives apart, under ``HandlerSignal``: ``SkipRetry`` archives the
task at once, ``Retry(delay=...)`` asks for a retry after a given delay.

Errors carry structured attributes (``task_id``, ``queue``) so callers never parse messages.
"""

from __future__ import annotations

from datetime import timedelta


class ConveyorError(Exception):
    """Root of every error conveyor raises."""


class ConfigError(ConveyorError, ValueError):
    """A configuration value, option or URL is invalid."""


class InvalidNameError(ConfigError):
    """A task type, queue name or task id breaks the naming rule."""


class BrokerError(ConveyorError):
    """The broker failed to carry out an operation."""


class BrokerUnavailableError(BrokerError):
    """The broker cannot be reached; the operation may be retried later."""


class LeaseLostError(BrokerError):
    """The worker's lease on a task is gone: it expired, or another worker recovered the task.

    A result or failure reported under a lost lease is refused, so a slow ("zombie") worker never
    overwrites the outcome of the attempt that replaced it.
    """

    def __init__(self, message: str = "", *, task_id: str = "", queue: str = "") -> None:
        super().__init__(message or f"lease lost for task {task_id!r} in queue {queue!r}")
        self.task_id = task_id
        self.queue = queue


class TaskError(ConveyorError):
    """A problem with one task: its type, or its payload."""


class UnknownTaskError(TaskError):
    """No handler is registered for the task's type."""

    def __init__(self, task_type: str) -> None:
        super().__init__(f"no handler registered for task type {task_type!r}")
        self.task_type = task_type


class PayloadError(TaskError, TypeError):
    """The payload cannot be encoded as JSON, or a stored payload cannot be decoded."""


class PayloadTooLargeError(TaskError, ValueError):
    """The encoded payload is larger than the configured cap."""

    def __init__(self, *, size: int, limit: int) -> None:
        super().__init__(f"payload is {size} bytes, over the {limit}-byte limit")
        self.size = size
        self.limit = limit


class HeadersError(TaskError, ValueError):
    """A task's headers are not a small mapping of str to str (see ``conveyor.headers``)."""


class _TaskRefError(ConveyorError):
    def __init__(self, message: str, *, task_id: str = "", queue: str = "") -> None:
        super().__init__(message)
        self.task_id = task_id
        self.queue = queue


class DuplicateTaskError(_TaskRefError):
    """A unique task with the same type, payload and queue is still within its uniqueness TTL."""


class TaskIdConflictError(_TaskRefError):
    """A task with the same id already exists in the queue."""


class TaskNotFoundError(_TaskRefError):
    """No task with that id exists in the queue."""


class TaskNotActiveError(_TaskRefError):
    """The task exists but no worker is running it (only an ACTIVE task can be cancelled).

    ``state`` is the state it is in (a :class:`~conveyor.message.TaskState` value).
    """

    def __init__(self, *, task_id: str, queue: str, state: str) -> None:
        super().__init__(
            f"task {task_id!r} in queue {queue!r} is not active (it is {state}); only a "
            "running task can be cancelled",
            task_id=task_id,
            queue=queue,
        )
        self.state = state


class QueueFullError(_TaskRefError):
    """The queue has reached its configured length limit."""


class _QueueRefError(ConveyorError):
    def __init__(self, message: str, *, queue: str) -> None:
        super().__init__(message)
        self.queue = queue


class QueueNotEmptyError(_QueueRefError):
    """``delete_queue`` without ``force`` found tasks (in any state) in the queue.

    ``tasks`` is how many it holds; nothing was deleted.
    """

    def __init__(self, *, queue: str, tasks: int) -> None:
        super().__init__(
            f"queue {queue!r} holds {tasks} task(s); delete it with force to drop them",
            queue=queue,
        )
        self.tasks = tasks


class QueueInUseError(_QueueRefError):
    """``delete_queue`` found ACTIVE tasks: workers hold leases on them, so nothing was deleted.

    ``active`` is how many there are. Wait for them to finish (or pause the queue first so no
    new ones start) and try again.
    """

    def __init__(self, *, queue: str, active: int) -> None:
        super().__init__(
            f"queue {queue!r} has {active} active task(s) leased by workers; "
            "it cannot be deleted until they finish",
            queue=queue,
        )
        self.active = active


class ScheduleNotFoundError(ConveyorError, LookupError):
    """No schedule entry has that name (pausing, unpausing or removing it)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r}")
        self.name = name


class ProtocolError(ConveyorError, ValueError):
    """A client of ``conveyor server`` sent a request it cannot serve (bad JSON, verb, field).

    The message is what the client is told; the connection stays usable unless the server says
    otherwise.
    """


class ResultTimeoutError(ConveyorError):
    """A result did not arrive in the time allowed."""


class TaskFailedError(ConveyorError):
    """The awaited task was archived, or the awaited workflow failed (or was cancelled).

    Attributes:
        task_id: the archived task (for a workflow, its first failed step; empty when a
            cancelled workflow had no failed step).
        error: that task's last error.
    """

    def __init__(self, message: str = "", *, task_id: str = "", error: str = "") -> None:
        super().__init__(message or f"task {task_id!r} failed: {error}")
        self.task_id = task_id
        self.error = error


class WorkflowNotFoundError(ConveyorError):
    """No workflow with this id is stored (it never was, or it was purged)."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow {workflow_id!r}")
        self.workflow_id = workflow_id


class HandlerSignal(Exception):
    """Base of the exceptions a handler raises to steer what happens to its task."""


class SkipRetry(HandlerSignal):
    """Raise from a handler to archive the task at once, without further retries."""


class Retry(HandlerSignal):
    """Raise from a handler to retry the task after ``delay`` (counts as a failed attempt).

    Args:
        delay: how long to wait before the next attempt; ``None`` uses the server's retry delay.
        reason: text stored as the task's last error.
    """

    def __init__(self, reason: str = "retry requested", *, delay: timedelta | None = None) -> None:
        super().__init__(reason)
        self.delay = delay
