"""Producing tasks: ``AsyncClient`` (the async core) and ``Client`` (its sync facade).

Both take a broker URL (or a ready :class:`~conveyor.brokers.protocol.Broker`), validate options
at the boundary (see :mod:`conveyor.options`) and hand messages to the broker, one
``broker.enqueue`` call per ``enqueue`` or ``enqueue_many``.

Example::

    with Client("sqlite:///conveyor.db") as client:
        info = client.enqueue(Task("email:welcome", {"user_id": 42}), queue="critical")
        client.enqueue_in(timedelta(minutes=5), Task("email:reminder", {"user_id": 42}))
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Unpack

from conveyor.broker_handle import BrokerHandle, SyncFacade
from conveyor.brokers.protocol import BlockingEnqueue, Broker
from conveyor.config import DEFAULT_BROKER_URL, broker_url_from_env
from conveyor.errors import BrokerUnavailableError, ConfigError
from conveyor.message import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    JSONValue,
    Task,
    TaskInfo,
    TaskMessage,
    validate_name,
)
from conveyor.options import (
    NO_OPTIONS,
    DefaultOptions,
    Duration,
    EnqueueOptions,
    MessageTemplate,
    TaskOptions,
    parse_options,
)
from conveyor.propagation import trace_context_reader
from conveyor.signals import Signals, TaskEvent, TaskEventKind

if TYPE_CHECKING:
    from conveyor.workflows import Canvas, WorkflowInfo

DEFAULT_WORKFLOW_RETENTION = timedelta(days=1)
"""How long a finished workflow and its steps' results are kept, unless told otherwise."""


class _Producer:
    """Option layering and message building shared by both clients (no I/O)."""

    def __init__(self, max_payload_bytes: int, defaults: DefaultOptions) -> None:
        if (
            not isinstance(max_payload_bytes, int)
            or isinstance(max_payload_bytes, bool)
            or max_payload_bytes <= 0
        ):
            raise ConfigError(
                f"max_payload_bytes must be a positive int, not {max_payload_bytes!r}"
            )
        self.max_payload_bytes = max_payload_bytes
        self.defaults = parse_options(defaults, defaults_only=True)
        # Merged client + per-type defaults: the hot path merges only the call's options.
        self.type_defaults: dict[str, TaskOptions] = {}
        self.templates: dict[str, MessageTemplate] = {}
        # The active span's context, added to each task's headers when OpenTelemetry is there.
        self.trace_context = trace_context_reader()

    def set_default_options(self, task_type: str, options: DefaultOptions) -> None:
        validate_name(task_type, what="task type")
        self.type_defaults[task_type] = self.defaults.merged(
            parse_options(options, defaults_only=True)
        )
        self.templates.pop(task_type, None)

    def template(self, task_type: str, call: TaskOptions | None) -> MessageTemplate:
        if call is None or call is NO_OPTIONS:
            # The common case (no per-call options): one template per task type, reused.
            template = self.templates.get(task_type)
            if template is None:
                base = self.type_defaults.get(task_type, self.defaults)
                template = self.templates[task_type] = MessageTemplate.from_options(base)
            return template
        base = self.type_defaults.get(task_type, self.defaults)
        return MessageTemplate.from_options(base.merged(call))

    def message(self, task: Task, call: TaskOptions | None) -> TaskMessage:
        if not isinstance(task, Task):
            raise TypeError(f"expected a conveyor.Task, not {type(task).__name__}")
        return self.template(task.type, call).build(
            task, self.max_payload_bytes, self.trace_context()
        )

    def messages(self, tasks: Iterable[Task], options: EnqueueOptions) -> list[TaskMessage]:
        call = parse_options(options) if options else None
        if call is not None and call.task_id is not None:
            raise ConfigError("option 'task_id' cannot be shared by several tasks in enqueue_many")
        templates: dict[str, MessageTemplate] = {}
        messages = []
        limit = self.max_payload_bytes
        context = self.trace_context()  # one call, one span: the same context for every task
        for task in tasks:
            if not isinstance(task, Task):
                raise TypeError(f"expected a conveyor.Task, not {type(task).__name__}")
            template = templates.get(task.type)
            if template is None:
                template = templates[task.type] = self.template(task.type, call)
            messages.append(template.build(task, limit, context))
        return messages

    @staticmethod
    def scheduled(options: EnqueueOptions, name: str, value: object) -> TaskOptions:
        clash = {"process_in", "process_at"} & set(options)
        if clash:
            raise TypeError(
                f"option {sorted(clash)[0]!r} cannot be combined with enqueue_in/enqueue_at"
            )
        return parse_options({**options, name: value})


class AsyncClient(BrokerHandle):
    """Enqueues tasks from async code.

    Args:
        broker: a broker URL (``sqlite:///conveyor.db``, ``memory://``, ``redis://...``) or a
            Broker instance. A URL's broker is owned and closed by the client; an instance is not.
        max_payload_bytes: the cap on an encoded payload (default 1 MiB).
        **defaults: default options for every task (see :class:`~conveyor.options.DefaultOptions`).

    Raises:
        ConfigError: a bad URL (without its password) or a bad default option.
        TypeError: an unknown default option.

    Example::

        async with AsyncClient("redis://localhost:6379/0") as client:
            info = await client.enqueue(Task("report:build", {"id": 7}), timeout=600)
    """

    def __init__(
        self,
        broker: str | Broker = DEFAULT_BROKER_URL,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        **defaults: Unpack[DefaultOptions],
    ) -> None:
        super().__init__(broker)
        self._producer = _Producer(max_payload_bytes, defaults)
        self.signals = Signals()
        """``signals.task_enqueued`` is sent for every task this client stores."""

    def _enqueued(self, infos: list[TaskInfo]) -> list[TaskInfo]:
        """Send ``task_enqueued`` for each stored task; return ``infos``."""
        signal = self.signals.task_enqueued
        if signal.receivers:
            for info in infos:
                signal.send(
                    TaskEvent(
                        kind=TaskEventKind.ENQUEUED,
                        task_id=info.id,
                        task_type=info.type,
                        queue=info.queue,
                    )
                )
        return infos

    @classmethod
    def from_env(cls, **defaults: Unpack[DefaultOptions]) -> AsyncClient:
        """A client for ``$CONVEYOR_BROKER_URL`` (default ``sqlite:///conveyor.db``)."""
        return cls(broker_url_from_env(), **defaults)

    def __repr__(self) -> str:
        return f"AsyncClient({self._label!r})"

    @property
    def broker(self) -> Broker:
        """The broker this client writes to."""
        return self._broker

    def set_default_options(self, task_type: str, **options: Unpack[DefaultOptions]) -> None:
        """Set default options for every task of ``task_type`` (overriding the client's defaults).

        Raises:
            TypeError: an unknown option, or one that cannot be a default (``task_id``...).
            ConfigError: a bad option value or task type.
        """
        self._producer.set_default_options(task_type, options)

    async def enqueue(self, task: Task, **options: Unpack[EnqueueOptions]) -> TaskInfo:
        """Store ``task`` and return its info (state PENDING, or SCHEDULED when delayed).

        Raises:
            TypeError: an unknown option name.
            ConfigError: a bad option value (negative duration, bad queue name...).
            PayloadError: (a ``TypeError``) the payload is not JSON; names the bad value.
            PayloadTooLargeError: the payload is over ``max_payload_bytes``.
            HeadersError: (a ``ValueError``) the headers are not a small mapping of str to str.
            TaskIdConflictError: a task with the given ``task_id`` exists in the queue.
            DuplicateTaskError: a ``unique`` task with the same type, payload and queue is live.
            BrokerError: the broker failed; the enqueue may or may not have happened.
        """
        message = self._producer.message(task, parse_options(options) if options else None)
        return self._enqueued(await self._broker.enqueue([message]))[0]

    async def enqueue_in(
        self, delay: Duration, task: Task, **options: Unpack[EnqueueOptions]
    ) -> TaskInfo:
        """Enqueue ``task`` to run ``delay`` (seconds or timedelta) from now, by the broker's clock.

        Raises:
            The errors of :meth:`enqueue`; a ``TypeError`` if ``process_in``/``process_at`` is
            also given.
        """
        call = self._producer.scheduled(options, "process_in", delay)
        return self._enqueued(await self._broker.enqueue([self._producer.message(task, call)]))[0]

    async def enqueue_at(
        self, when: datetime, task: Task, **options: Unpack[EnqueueOptions]
    ) -> TaskInfo:
        """Enqueue ``task`` to run at ``when`` (aware datetime; naive is taken as UTC).

        Raises:
            The errors of :meth:`enqueue`; a ``TypeError`` if ``process_in``/``process_at`` is
            also given.
        """
        call = self._producer.scheduled(options, "process_at", when)
        return self._enqueued(await self._broker.enqueue([self._producer.message(task, call)]))[0]

    async def enqueue_many(
        self, tasks: Iterable[Task], **options: Unpack[EnqueueOptions]
    ) -> list[TaskInfo]:
        """Store several tasks, all or nothing, in one broker call; options apply to each.

        Raises:
            The errors of :meth:`enqueue`; nothing is stored when any task fails validation.
            ``task_id`` cannot be shared by several tasks (``ConfigError``).
        """
        messages = self._producer.messages(tasks, options)
        return self._enqueued(await self._broker.enqueue(messages)) if messages else []

    async def enqueue_workflow(
        self, canvas: Canvas, *, retention: Duration = DEFAULT_WORKFLOW_RETENTION
    ) -> WorkflowInfo:
        """Store a workflow (a chain, group, chord or signature) and enqueue its first steps.

        Example::

            info = await client.enqueue_workflow(chain(fetch.s(url), resize.s(64)))
            result = await client.wait(info, timeout=30)

        Args:
            canvas: what to run.
            retention: how long the workflow and its steps' results are kept once it finished.

        Raises:
            TypeError: a bad canvas item or step option. ConfigError: the broker has no
            workflows, or a bad option value. The payload errors of :meth:`enqueue`.
        """
        from conveyor.workflows.running import enqueue_workflow

        return await enqueue_workflow(self._broker, self._producer.message, canvas, retention)

    # The public API takes ``timeout`` as seconds or a timedelta (issue 17), not asyncio.timeout.
    async def wait(
        self,
        info: TaskInfo | WorkflowInfo,
        timeout: Duration,  # noqa: ASYNC109
    ) -> JSONValue:
        """Wait for the result of a task (enqueued with a ``retention``) or of a workflow.

        Raises:
            ResultTimeoutError: the result did not arrive within ``timeout``.
            TaskFailedError: the task was archived, or the workflow failed or was cancelled.
            ConfigError: the task keeps no result (no retention).
        """
        from conveyor.workflows.running import wait_for

        return await wait_for(self._broker, info, timeout)


class Client(SyncFacade[AsyncClient]):
    """Enqueues tasks from synchronous code; same methods as :class:`AsyncClient`, blocking.

    The client owns one private event loop for its lifetime (broker connections live there) and
    drives it from the calling thread, so a call costs no new loop and no thread hand-off. A
    broker with a synchronous ``enqueue_blocking`` (SQLite, Redis: the optional
    :class:`~conveyor.brokers.protocol.BlockingEnqueue` protocol) is called directly instead,
    without the loop. It is safe to share between threads. Close it (or use ``with``) when done.

    Args:
        broker: a broker URL or a Broker instance (the instance must not be in use by another
            event loop; the client does not close it).
        max_payload_bytes: the cap on an encoded payload (default 1 MiB).
        **defaults: default options for every task.

    Example::

        with Client("sqlite:///conveyor.db", queue="emails") as client:
            client.enqueue(Task("email:welcome", {"user_id": 42}))
    """

    def __init__(
        self,
        broker: str | Broker = DEFAULT_BROKER_URL,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        **defaults: Unpack[DefaultOptions],
    ) -> None:
        super().__init__(
            AsyncClient(broker, max_payload_bytes=max_payload_bytes, **defaults), "conveyor-client"
        )
        self._producer = self._async._producer
        # The loop costs ~20 us a call; a broker that can enqueue synchronously skips it.
        broker = self._async.broker
        self._blocking = broker if isinstance(broker, BlockingEnqueue) else None

    @classmethod
    def from_env(cls, **defaults: Unpack[DefaultOptions]) -> Client:
        """A client for ``$CONVEYOR_BROKER_URL`` (default ``sqlite:///conveyor.db``)."""
        return cls(broker_url_from_env(), **defaults)

    def __repr__(self) -> str:
        return f"Client({self._async._label!r})"

    @property
    def broker(self) -> Broker:
        """The broker this client writes to (used on the client's private loop)."""
        return self._async.broker

    @property
    def signals(self) -> Signals:
        """``signals.task_enqueued`` is sent for every task this client stores."""
        return self._async.signals

    @signals.setter
    def signals(self, value: Signals) -> None:
        self._async.signals = value

    def set_default_options(self, task_type: str, **options: Unpack[DefaultOptions]) -> None:
        """Set default options for every task of ``task_type``; see :meth:`AsyncClient.set_default_options`."""  # noqa: E501
        self._producer.set_default_options(task_type, options)

    def _store(self, messages: list[TaskMessage]) -> list[TaskInfo]:
        if self._blocking is None:
            return self._async._enqueued(self._loop.run(self._async.broker.enqueue(messages)))
        if self._async.closed:
            raise BrokerUnavailableError("conveyor-client is closed")  # as the private loop says
        return self._async._enqueued(self._blocking.enqueue_blocking(messages))

    def enqueue(self, task: Task, **options: Unpack[EnqueueOptions]) -> TaskInfo:
        """Store ``task`` and return its info; see :meth:`AsyncClient.enqueue` for the errors."""
        message = self._producer.message(task, parse_options(options) if options else None)
        return self._store([message])[0]

    def enqueue_in(
        self, delay: Duration, task: Task, **options: Unpack[EnqueueOptions]
    ) -> TaskInfo:
        """Enqueue ``task`` to run ``delay`` from now (broker clock); see :meth:`AsyncClient.enqueue_in`."""  # noqa: E501
        call = self._producer.scheduled(options, "process_in", delay)
        return self._store([self._producer.message(task, call)])[0]

    def enqueue_at(self, when: datetime, task: Task, **options: Unpack[EnqueueOptions]) -> TaskInfo:
        """Enqueue ``task`` to run at ``when``; see :meth:`AsyncClient.enqueue_at`."""
        call = self._producer.scheduled(options, "process_at", when)
        return self._store([self._producer.message(task, call)])[0]

    def enqueue_many(
        self, tasks: Iterable[Task], **options: Unpack[EnqueueOptions]
    ) -> list[TaskInfo]:
        """Store several tasks in one broker call; see :meth:`AsyncClient.enqueue_many`."""
        messages = self._producer.messages(tasks, options)
        return self._store(messages) if messages else []

    def enqueue_workflow(
        self, canvas: Canvas, *, retention: Duration = DEFAULT_WORKFLOW_RETENTION
    ) -> WorkflowInfo:
        """Store a workflow and enqueue its first steps (see ``AsyncClient.enqueue_workflow``)."""
        return self._loop.run(self._async.enqueue_workflow(canvas, retention=retention))

    def wait(self, info: TaskInfo | WorkflowInfo, timeout: Duration) -> JSONValue:
        """Wait for a task's or a workflow's result; see :meth:`AsyncClient.wait`."""
        return self._loop.run(self._async.wait(info, timeout))
