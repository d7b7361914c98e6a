"""OpenTelemetry tracing: a span around every task attempt (``pip install 'conveyor[otel]'``).

:class:`TracingMiddleware` starts a ``CONSUMER`` span named ``"<task type> process"`` around the
rest of the handler chain, with the messaging attributes of OpenTelemetry's semantic conventions
(``messaging.system``, ``messaging.operation.type``, ``messaging.destination.name``,
``messaging.message.id``) and conveyor's own (``conveyor.task.type``, ``conveyor.task.attempt``).
A handler's own spans (database calls, HTTP requests) become its children, in async handlers
and in sync handlers' threads alike. An attempt that raises records the exception and ends with
an ``ERROR`` status; a cancelled one (timeout, cancel, shutdown) too.

Example::

    from conveyor.otel import TracingMiddleware

    app.mux.use(TracingMiddleware())     # the global tracer provider, or tracer_provider=...

The producer's trace context travels in the task's headers: when a span is active while a
client enqueues a task (and OpenTelemetry is installed), the client injects the context with
OpenTelemetry's configured propagator (W3C ``traceparent`` by default), and this middleware
extracts it, so each attempt's span is a child of the span that enqueued the task, in the same
trace. A task enqueued outside any span starts a new trace.
"""

from __future__ import annotations

import asyncio

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from conveyor.message import JSONValue, Task
from conveyor.middleware import CallNext
from conveyor.worker.context import TaskContext
from conveyor.worker.registration import conveyor_version

__all__ = ["TracingMiddleware"]


class TracingMiddleware:
    """Middleware that runs each attempt inside an OpenTelemetry span.

    Args:
        tracer_provider: where spans go (default: the global provider, as set by
            ``opentelemetry.trace.set_tracer_provider`` or the OpenTelemetry distro).
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(
            "conveyor", conveyor_version(), tracer_provider=tracer_provider
        )

    async def __call__(self, ctx: TaskContext, task: Task, call_next: CallNext) -> JSONValue:
        """Run the rest of the chain inside a span describing this attempt."""
        attributes: dict[str, str | int] = {
            "messaging.system": "conveyor",
            "messaging.operation.type": "process",
            "messaging.destination.name": ctx.queue,
            "messaging.message.id": ctx.task_id,
            "conveyor.task.type": task.type,
            "conveyor.task.attempt": ctx.retry_count + 1,
        }
        headers = ctx.headers
        # The producer's context, when it sent one: the attempt's span becomes its child.
        parent = propagate.extract(headers) if headers else None
        with self._tracer.start_as_current_span(
            f"{task.type} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,  # recorded below, cancellations included
            set_status_on_exception=False,
        ) as span:
            try:
                return await call_next(ctx, task)
            except (Exception, asyncio.CancelledError) as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
