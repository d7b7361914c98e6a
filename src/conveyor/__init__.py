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
from conveyor.brokers.throughput import MinuteTotals
from conveyor.brokers.workers import WorkerInfo
from conveyor.brokers.workflows import StepState, WorkflowState
from conveyor.client import AsyncClient, Client
from conveyor.errors import (
    BrokerError,
    BrokerUnavailableError,
    ConfigError,
    ConveyorError,
    DuplicateTaskError,
    HandlerSignal,
    HeadersError,
    InvalidNameError,
    LeaseLostError,
    PayloadError,
    PayloadTooLargeError,
    ProtocolError,
    QueueFullError,
    QueueInUseError,
    QueueNotEmptyError,
    ResultTimeoutError,
    Retry,
    ScheduleNotFoundError,
    SkipRetry,
    TaskError,
    TaskFailedError,
    TaskIdConflictError,
    TaskNotActiveError,
    TaskNotFoundError,
    UnknownTaskError,
    WorkflowNotFoundError,
)
from conveyor.inspector import AsyncInspector, Inspector
from conveyor.logs import JsonFormatter, TaskContextFilter, TextFormatter
from conveyor.message import (
    AttemptRecord,
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
from conveyor.progress import PipelineStepState, StepLog
from conveyor.scheduling.entry import ScheduleEntry, ScheduleInfo, ScheduleTarget
from conveyor.scheduling.scheduler import Scheduler
from conveyor.scheduling.spec import MissedPolicy
from conveyor.signals import Signals, TaskEvent, TaskEventKind
from conveyor.worker.context import TaskContext, current_context
from conveyor.worker.server import Server
from conveyor.workflows import (
    Canvas,
    Chain,
    Chord,
    Group,
    Signature,
    WorkflowInfo,
    WorkflowStep,
    chain,
    chord,
    group,
    signature,
)
from conveyor.workflows.pipeline import Pipeline, ReentrantStep, reentrant

__all__ = [
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
