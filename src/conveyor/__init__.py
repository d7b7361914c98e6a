"""conveyor: an asyncio-native, typed background task queue (embedded SQLite or Redis).

Everything public is importable from here; ``__all__`` is the public API (pinned by a test).

Example::

    import conveyor

    app = conveyor.App("sqlite:///conveyor.db")

    @app.task(queue="emails")
    def send_welcome(user_id: int) -> None: ...

    send_welcome.enqueue(42)          # producer
    # conveyor worker myproject.tasks:app   (worker)
"""

from __future__ import annotations

from conveyor.app import App, AsyncTaskCall, ServerOptions, TaskCall, TaskFunction
from conveyor.backoff import ExponentialBackoff, RetryDelay, default_retry_delay
from conveyor.brokers import open_broker
from conveyor.brokers.limits import FlowControl, QueueLimit, Rate
from conveyor.brokers.protocol import Broker, BrokerInfo, Capabilities
from conveyor.client import AsyncClient, Client
from conveyor.errors import (
    BrokerError,
    BrokerUnavailableError,
    ConfigError,
    ConveyorError,
    DuplicateTaskError,
    HandlerSignal,
    InvalidNameError,
    LeaseLostError,
    PayloadError,
    PayloadTooLargeError,
    QueueFullError,
    QueueInUseError,
    QueueNotEmptyError,
    ResultTimeoutError,
    Retry,
    SkipRetry,
    TaskError,
    TaskIdConflictError,
    TaskNotFoundError,
    UnknownTaskError,
)
from conveyor.inspector import AsyncInspector, Inspector
from conveyor.message import (
    Encoding,
    JSONValue,
    Payload,
    QueueStats,
    Task,
    TaskId,
    TaskInfo,
    TaskState,
)
from conveyor.middleware import (
    AsyncHandler,
    CallNext,
    ErrorHandler,
    Handler,
    Middleware,
    SyncHandler,
    compose,
)
from conveyor.mux import ServeMux
from conveyor.options import DEFAULT_TIMEOUT, DefaultOptions, EnqueueOptions
from conveyor.worker.context import TaskContext, current_context
from conveyor.worker.server import Server

__all__ = [
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
