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
    "Broker",
    "BrokerError",
    "BrokerInfo",
    "BrokerUnavailableError",
    "CallNext",
    "Capabilities",
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
    "Handler",
    "HandlerSignal",
    "Inspector",
    "InvalidNameError",
    "JSONValue",
    "LeaseLostError",
    "Middleware",
    "Payload",
    "PayloadError",
    "PayloadTooLargeError",
    "QueueFullError",
    "QueueInUseError",
    "QueueLimit",
    "QueueNotEmptyError",
    "QueueStats",
    "Rate",
    "ResultTimeoutError",
    "Retry",
    "RetryDelay",
    "ServeMux",
    "Server",
    "ServerOptions",
    "SkipRetry",
    "SyncHandler",
    "Task",
    "TaskCall",
    "TaskContext",
    "TaskError",
    "TaskFunction",
    "TaskId",
    "TaskIdConflictError",
    "TaskInfo",
    "TaskNotFoundError",
    "TaskState",
    "UnknownTaskError",
    "compose",
    "current_context",
    "default_retry_delay",
    "open_broker",
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
