"""The App layer: typed task functions on top of the client and the worker.

``@app.task`` turns a plain function (sync or async) into a
:class:`~conveyor.task_function.TaskFunction`: calling it still runs the function;
``.enqueue(...)`` takes the *same arguments*, checks them against the signature and enqueues a
task whose JSON payload is the bound arguments. ``app.mux`` routes every registered task to its
function, so the same ``App`` object serves both the producer and the worker.

Example::

    app = App("sqlite:///conveyor.db")

    @app.task(queue="emails", max_retry=5)
    def send_welcome(user_id: int, *, lang: str = "en") -> None: ...

    send_welcome.enqueue(42, lang="fr")             # from any sync code
    await send_welcome.aio.enqueue(42)              # from async code (e.g. a web handler)
    send_welcome.options(queue="critical").enqueue_in(60, 42)
    # worker:  conveyor worker myproject.tasks:app
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, ParamSpec, TypedDict, TypeVar, Unpack, overload

from conveyor.backoff import RetryDelay
from conveyor.brokers.limits import Rate, TaskLimits
from conveyor.brokers.protocol import Broker
from conveyor.client import DEFAULT_WORKFLOW_RETENTION, AsyncClient, Client
from conveyor.config import DEFAULT_BROKER_URL, split_broker_url
from conveyor.errors import ConfigError, InvalidNameError
from conveyor.message import DEFAULT_MAX_PAYLOAD_BYTES, NAME_RULE, validate_name
from conveyor.middleware import ErrorHandler
from conveyor.mux import ServeMux
from conveyor.options import DefaultOptions, Duration, TaskOptions, parse_options
from conveyor.scheduling.entry import ScheduleEntry, new_entry
from conveyor.scheduling.scheduler import Scheduler
from conveyor.scheduling.targets import canvas_entry, task_entry
from conveyor.signals import Signals
from conveyor.task_function import AsyncTaskCall, TaskCall, TaskFunction, default_task_name
from conveyor.worker.server import Server
from conveyor.workflows.canvas import Canvas
from conveyor.workflows.info import WorkflowInfo

if TYPE_CHECKING:
    from conveyor.workflows.pipeline import Pipeline, ReentrantStep, StepFunction

__all__ = ["App", "AsyncTaskCall", "ServerOptions", "TaskCall", "TaskFunction"]

P = ParamSpec("P")
R = TypeVar("R")


class ServerOptions(TypedDict, total=False):
    """Keyword options of :class:`~conveyor.worker.server.Server`, for :meth:`App.server`."""

    concurrency: int | None
    queues: Mapping[str, int] | list[str] | tuple[str, ...] | None
    strict_priority: bool
    retry_delay: RetryDelay
    error_handler: ErrorHandler | None
    shutdown_timeout: float | timedelta
    sync_cancel_grace: float | timedelta
    lease: float | timedelta
    max_payload_bytes: int
    renew_interval: float | timedelta | None
    recover_interval: float | timedelta
    recover_delay: float | timedelta
    max_crash_attempts: int
    janitor_interval: float | timedelta
    poll_interval: float | timedelta


class App:
    """A task registry bound to a broker: producer and worker share one definition.

    Args:
        broker: a broker URL or a Broker instance (default ``sqlite:///conveyor.db``). The CLI's
            ``--broker`` / ``CONVEYOR_BROKER_URL`` override it for the worker.
        max_payload_bytes: the cap on an encoded payload (default 1 MiB).
        schedule_owner: the group this app's code-defined schedules belong to in the broker
            (default ``"app"``). A starting scheduler removes the entries of its group that
            the code no longer defines: two apps sharing one broker need different groups.
        **defaults: default options for every task of this app.

    Example::

        app = App("sqlite:///conveyor.db")

        @app.task
        async def resize(image_id: int) -> None: ...
    """

    def __init__(
        self,
        broker: str | Broker = DEFAULT_BROKER_URL,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        schedule_owner: str = "app",
        **defaults: Unpack[DefaultOptions],
    ) -> None:
        validate_name(schedule_owner, what="schedule owner")
        if not isinstance(broker, str | Broker):
            raise TypeError(f"broker must be a URL string or a Broker, not {type(broker).__name__}")
        if isinstance(broker, str):
            split_broker_url(broker)  # a bad URL fails here, without its password
        parse_options(defaults, defaults_only=True)
        self.broker = broker
        self.max_payload_bytes = max_payload_bytes
        self.defaults = defaults
        self._tasks: dict[str, TaskFunction[..., object]] = {}
        self._pipelines: dict[str, Pipeline] = {}
        self._limits: dict[str, TaskLimits] = {}  # flow control declared by @app.task
        self._mux: ServeMux | None = None
        self._client: Client | None = None
        self._async_client: AsyncClient | None = None
        self.schedule_owner = schedule_owner
        self._schedules: dict[str, ScheduleEntry] = {}
        self.signals = Signals()
        """Lifecycle signals shared by the app's clients (enqueued) and the servers it makes,
        ``conveyor worker`` included (started, succeeded, failed, retried, archived)."""

    def __repr__(self) -> str:
        return f"App({len(self._tasks)} tasks)"

    @property
    def tasks(self) -> Mapping[str, TaskFunction[..., object]]:
        """Registered task functions by task type name (a copy)."""
        return dict(self._tasks)

    @overload
    def task(self, fn: Callable[P, R], /) -> TaskFunction[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        rate_limit: str | None = None,
        max_concurrency: int | None = None,
        **options: Unpack[DefaultOptions],
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...

    def task(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        rate_limit: str | None = None,
        max_concurrency: int | None = None,
        **options: Unpack[DefaultOptions],
    ) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
        """Register a function as a task: ``@app.task`` or ``@app.task(queue=..., name=...)``.

        Args:
            fn: the function (sync or async).
            name: the task type; default ``module.qualname`` of the function, without the
                ``<locals>`` parts of a nested function (:func:`default_task_name`).
            rate_limit: at most this many starts of the task across every worker, such as
                ``"10/s"``, ``"600/m"`` or ``"100/10s"`` (see docs/flow-control.md); written to
                the broker when a worker serving this app starts.
            max_concurrency: at most this many of the task ACTIVE at once across every
                worker, whatever each worker's concurrency; written like ``rate_limit``.
            **options: default options for this task (queue, max_retry, timeout, unique,
                retention).

        Raises:
            ConfigError: an invalid or duplicate name, a bad rate limit, or a bad option.
            TypeError: an unknown option.
        """
        parse_options(options, defaults_only=True)
        limits = TaskLimits(
            rate=None if rate_limit is None else Rate.parse(rate_limit),
            max_concurrency=max_concurrency,
        )

        def register(func: Callable[P, R]) -> TaskFunction[P, R]:
            task_fn = self._register(func, name, options)
            if limits != TaskLimits():
                self._limits[task_fn.name] = limits
                if self._mux is not None:
                    self._mux.task_limits[task_fn.name] = limits
            return task_fn

        return register if fn is None else register(fn)

    def _register(
        self, fn: Callable[P, R], name: str | None, options: DefaultOptions
    ) -> TaskFunction[P, R]:
        if not callable(fn):
            raise TypeError(f"@app.task needs a function, not {type(fn).__name__}")
        task_name = name or default_task_name(fn)
        try:
            validate_name(task_name, what="task name")
        except InvalidNameError:
            hint = "" if name else "; pass name=... to @app.task"
            raise InvalidNameError(
                f"invalid task name {task_name!r}: must be {NAME_RULE}{hint}"
            ) from None
        if task_name in self._tasks or task_name in self._pipelines:
            hint = "" if name else " (the default name of another function): pass name=..."
            raise ConfigError(f"a task named {task_name!r} is already registered{hint}")
        task_fn = TaskFunction(self, fn, task_name, options)
        self._tasks[task_name] = task_fn  # type: ignore[assignment]
        for client in (self._client, self._async_client):
            if client is not None:
                client.set_default_options(task_name, **options)
        if self._mux is not None:
            self._mux.handle(task_name, task_fn.handler())
        return task_fn

    def pipeline(
        self,
        name: str,
        *steps: StepFunction | ReentrantStep,
        **options: Unpack[DefaultOptions],
    ) -> Pipeline:
        """Register a pipeline: one task running ``steps`` in order, resuming after a crash.

        Each step takes a dict and returns a dict (sync or async); see
        :mod:`conveyor.workflows.pipeline` and docs/pipelines.md.

        Example::

            checkout = app.pipeline("orders.checkout", reserve, reentrant(quote), charge)
            checkout.enqueue({"order_id": 42})

        Args:
            name: the task type.
            *steps: the steps; wrap one in :func:`conveyor.reentrant` if it may run again.
            **options: default options (queue, max_retry, timeout, unique, retention).

        Raises:
            ConfigError: an invalid or duplicate name, no steps, or a bad option.
            TypeError: a step that is not a function, or an unknown option.
        """
        # Imported here: the pipeline module builds on this one (TaskCall, App).
        from conveyor.workflows.pipeline import Pipeline

        parse_options(options, defaults_only=True)
        validate_name(name, what="pipeline name")
        if name in self._tasks or name in self._pipelines:
            raise ConfigError(f"a task named {name!r} is already registered")
        pipeline = Pipeline(self, name, steps, options)
        self._pipelines[name] = pipeline
        for client in (self._client, self._async_client):
            if client is not None:
                client.set_default_options(name, **options)
        if self._mux is not None:
            self._mux.handle(name, pipeline.handler())
        return pipeline

    @property
    def schedules(self) -> Mapping[str, ScheduleEntry]:
        """The schedules defined with :meth:`schedule` and :meth:`periodic`, by name (a copy)."""
        return dict(self._schedules)

    def schedule(
        self,
        target: TaskFunction[..., object] | Canvas,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        name: str | None = None,
        missed: str = "once",
        **options: Unpack[DefaultOptions],
    ) -> ScheduleEntry:
        """Run a task or a workflow on a schedule: a cron expression or a fixed interval.

        Every worker of this app runs a scheduler (``--no-scheduler`` turns it off); however
        many run, each fire time is enqueued once. See docs/scheduling.md.

        Example::

            app.schedule(send_report, cron="0 7 * * mon-fri", tz="Europe/Paris")
            app.schedule(sync.s(full=True), every=timedelta(minutes=5), queue="sync")
            app.schedule(chain(fetch.s(), store.s()), cron="@hourly", name="ingest")

        Args:
            target: a task function of this app that takes no required arguments; a
                signature (``fn.s(...)``, ``fn.si(...)``, ``conveyor.signature(...)``) whose
                call is complete; or a workflow (chain, group, chord, or a signature with
                callbacks), which then needs a ``name``.
            cron: five fields, or six with the seconds first; or ``@hourly``, ``@daily``...
            every: seconds or a ``timedelta`` (fires on its multiples since the Unix epoch).
            tz: the time zone of ``cron`` (an IANA name).
            name: unique per app; default the task type.
            missed: fire times missed while no scheduler ran: ``once`` (one task for all),
                ``skip`` or ``all`` (one each, at most 100).
            **options: enqueue options of each task (queue, max_retry, timeout, unique,
                retention), over the app's defaults, the task's and the signature's own (for
                a workflow: of each step, over that step's own).

        Raises:
            ConfigError: a bad cron expression, interval, time zone or ``missed`` (naming the
                bad part), a name already scheduled, or a workflow without a name.
            TypeError: the target is none of those, or it needs arguments.
        """
        if not isinstance(target, TaskFunction):
            entry = canvas_entry(
                target,
                defaults=self._type_defaults,
                name=name,
                cron=cron,
                every=every,
                tz=tz,
                missed=missed,
                options=parse_options(options, defaults_only=True),
                max_payload_bytes=self.max_payload_bytes,
            )
            return self._add_schedule(entry)
        try:
            task = target.task()
        except TypeError as exc:
            raise TypeError(f"a scheduled task takes no required arguments: {exc}") from None
        entry = task_entry(
            target.name,
            task.payload,
            parse_options(target.defaults, defaults_only=True),
            defaults=self._type_defaults,
            name=name,
            cron=cron,
            every=every,
            tz=tz,
            missed=missed,
            options=parse_options(options, defaults_only=True),
        )
        return self._add_schedule(entry)

    def _add_schedule(self, entry: ScheduleEntry) -> ScheduleEntry:
        if entry.name in self._schedules:
            raise ConfigError(f"a schedule named {entry.name!r} is already defined")
        self._schedules[entry.name] = entry
        return entry

    def _type_defaults(self, task_type: str) -> TaskOptions:
        """The options a task type starts from: the app's defaults, then its task's (or its
        pipeline's), as the app's clients layer them."""
        base = parse_options(self.defaults, defaults_only=True)
        found = self._tasks.get(task_type) or self._pipelines.get(task_type)
        if found is None:
            return base
        return base.merged(parse_options(found.defaults, defaults_only=True))

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        missed: str = "once",
        name: str | None = None,
        **options: Unpack[DefaultOptions],
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]:
        """Register a function as a task (as ``@app.task``) and schedule it, with no arguments.

        Example::

            @app.periodic(cron="*/10 * * * * *")       # every ten seconds
            def heartbeat() -> None: ...

        Args and errors as :meth:`schedule` (``name`` names both the task and the schedule);
        ``**options`` are the task's options, as for ``@app.task``.
        """
        parse_options(options, defaults_only=True)
        new_entry(  # check the schedule before registering anything
            name="check",
            task_type="check",
            payload=None,
            cron=cron,
            every=every,
            tz=tz,
            missed=missed,
            options=parse_options({}),
        )

        def register(fn: Callable[P, R]) -> TaskFunction[P, R]:
            task_fn = self._register(fn, name, options)
            self.schedule(task_fn, cron=cron, every=every, tz=tz, missed=missed)  # type: ignore[arg-type]
            return task_fn

        return register

    def scheduler(self, broker: str | Broker | None = None) -> Scheduler:
        """A :class:`~conveyor.scheduling.scheduler.Scheduler` for this app's schedules on its
        broker (or ``broker``): ``scheduler.start()`` on a thread, or ``await
        scheduler.serve()``. ``conveyor worker`` and ``conveyor scheduler`` run one for you."""
        return Scheduler(
            self.broker if broker is None else broker,
            entries=list(self._schedules.values()),
            owner=self.schedule_owner,
            max_payload_bytes=self.max_payload_bytes,
        )

    @property
    def mux(self) -> ServeMux:
        """A :class:`~conveyor.mux.ServeMux` routing every registered task to its function.

        Made once; tasks registered later are added to it, middleware added with ``use`` stays.
        """
        if self._mux is None:
            mux = ServeMux()
            for task_name, task_fn in self._tasks.items():
                mux.handle(task_name, task_fn.handler())
            for name, pipeline in self._pipelines.items():
                mux.handle(name, pipeline.handler())
            mux.task_limits.update(self._limits)
            self._mux = mux
        return self._mux

    def _configure(self, client: Client | AsyncClient) -> None:
        client.signals = self.signals
        for task_name, task_fn in self._tasks.items():
            client.set_default_options(task_name, **task_fn.defaults)
        for name, pipeline in self._pipelines.items():
            client.set_default_options(name, **pipeline.defaults)

    @property
    def client(self) -> Client:
        """The app's sync :class:`~conveyor.client.Client` (made on first use)."""
        if self._client is None:
            client = Client(self.broker, max_payload_bytes=self.max_payload_bytes, **self.defaults)
            self._configure(client)
            self._client = client
        return self._client

    @property
    def async_client(self) -> AsyncClient:
        """The app's :class:`~conveyor.client.AsyncClient` (made on first use; one event loop)."""
        if self._async_client is None:
            client = AsyncClient(
                self.broker, max_payload_bytes=self.max_payload_bytes, **self.defaults
            )
            self._configure(client)
            self._async_client = client
        return self._async_client

    def server(
        self, broker: str | Broker | None = None, **options: Unpack[ServerOptions]
    ) -> Server:
        """A :class:`~conveyor.worker.server.Server` on the app's broker (or ``broker``).

        Run it with ``server.run(app.mux)``, or use :meth:`run`.
        """
        server = Server(self.broker if broker is None else broker, **options)
        server.signals = self.signals
        return server

    def run(self, **options: Unpack[ServerOptions]) -> None:
        """Run a worker for this app in the calling thread until SIGTERM/SIGINT."""
        self.server(**options).run(self.mux)

    def close(self) -> None:
        """Close the app's sync client, if one was made (the async one needs :meth:`aclose`)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def enqueue_workflow(
        self, canvas: Canvas, *, retention: Duration = DEFAULT_WORKFLOW_RETENTION
    ) -> WorkflowInfo:
        """Enqueue a workflow through the app's sync client; see :meth:`Client.enqueue_workflow`."""
        return self.client.enqueue_workflow(canvas, retention=retention)

    async def aenqueue_workflow(
        self, canvas: Canvas, *, retention: Duration = DEFAULT_WORKFLOW_RETENTION
    ) -> WorkflowInfo:
        """Enqueue a workflow through the app's async client (what ``sig.aio.enqueue()`` calls)."""
        return await self.async_client.enqueue_workflow(canvas, retention=retention)

    async def aclose(self) -> None:
        """Close both clients, if they were made."""
        if self._async_client is not None:
            await self._async_client.close()
            self._async_client = None
        self.close()
