"""The public API is pinned: adding or removing a name is a deliberate change to this list."""

from __future__ import annotations

import inspect
import subprocess
import sys

import conveyor

PUBLIC_API = [
    "DEFAULT_TIMEOUT",
    "App",
    "AsyncClient",
    "AsyncHandler",
    "AsyncInspector",
    "AsyncTaskCall",
    "AttemptRecord",
    "Broker",
    "BrokerError",
    "BrokerInfo",
    "BrokerUnavailableError",
    "CallNext",
    "Canvas",
    "Capabilities",
    "Chain",
    "Chord",
    "Client",
    "ConfigError",
    "ConveyorError",
    "DefaultOptions",
    "DuplicateTaskError",
    "Encoding",
    "EnqueueOptions",
    "ErrorHandler",
    "ExponentialBackoff",
    "FlowControl",
    "Group",
    "Handler",
    "HandlerSignal",
    "HeadersError",
    "Inspector",
    "InvalidNameError",
    "JSONValue",
    "JsonFormatter",
    "LeaseLostError",
    "Middleware",
    "MinuteTotals",
    "MissedPolicy",
    "Payload",
    "PayloadError",
    "PayloadTooLargeError",
    "Pipeline",
    "PipelineStepState",
    "ProtocolError",
    "QueueFullError",
    "QueueInUseError",
    "QueueLimit",
    "QueueNotEmptyError",
    "QueueStats",
    "Rate",
    "ReentrantStep",
    "ResultTimeoutError",
    "Retry",
    "RetryDelay",
    "ScheduleEntry",
    "ScheduleInfo",
    "ScheduleNotFoundError",
    "ScheduleTarget",
    "Scheduler",
    "ServeMux",
    "Server",
    "ServerOptions",
    "Signals",
    "Signature",
    "SkipRetry",
    "StepLog",
    "StepState",
    "SyncHandler",
    "Task",
    "TaskCall",
    "TaskContext",
    "TaskContextFilter",
    "TaskError",
    "TaskEvent",
    "TaskEventKind",
    "TaskFailedError",
    "TaskFunction",
    "TaskId",
    "TaskIdConflictError",
    "TaskInfo",
    "TaskNotActiveError",
    "TaskNotFoundError",
    "TaskState",
    "TextFormatter",
    "UnknownTaskError",
    "WorkerInfo",
    "WorkflowInfo",
    "WorkflowNotFoundError",
    "WorkflowState",
    "WorkflowStep",
    "chain",
    "chord",
    "compose",
    "current_context",
    "default_retry_delay",
    "group",
    "open_broker",
    "reentrant",
    "signature",
]


def _isort_key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_the_pinned_public_api() -> None:
    assert conveyor.__all__ == PUBLIC_API


def test_all_is_sorted_and_every_name_exists() -> None:
    assert conveyor.__all__ == sorted(conveyor.__all__, key=_isort_key)
    for name in conveyor.__all__:
        assert hasattr(conveyor, name), name


def test_public_classes_and_functions_have_docstrings() -> None:
    for name in conveyor.__all__:
        obj = getattr(conveyor, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_importing_conveyor_does_not_import_backends() -> None:
    code = "import sys, conveyor; print('redis' in sys.modules, 'sqlite3' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]
