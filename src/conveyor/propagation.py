"""The producer's trace context, carried to the worker in a task's headers.

When OpenTelemetry is installed and a span is active while a task is enqueued, the client adds
the span's context to the task's headers through OpenTelemetry's configured propagator (by
default W3C ``traceparent``, plus ``tracestate`` and ``baggage`` when set).
:class:`conveyor.otel.TracingMiddleware` reads it back, so the span of each attempt is a child
of the span that enqueued the task. Without OpenTelemetry, or without an active span, nothing
is added.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["TraceContext", "trace_context_reader"]

TraceContext = Callable[[], dict[str, str] | None]
"""Returns the active span's context as headers, or ``None`` when no span is active."""


def _none() -> dict[str, str] | None:
    return None


def trace_context_reader() -> TraceContext:
    """A function returning the current trace context as headers (``None`` without one).

    Imports OpenTelemetry once, here: without it the function returned always answers ``None``.
    """
    try:
        from opentelemetry import propagate, trace  # optional dependency
    except ImportError:
        return _none

    get_current_span = trace.get_current_span
    inject = propagate.inject

    def current() -> dict[str, str] | None:
        # Checked first: with no span active (the usual enqueue) this is one context lookup.
        if not get_current_span().get_span_context().is_valid:
            return None
        carrier: dict[str, str] = {}
        inject(carrier)
        return carrier or None

    return current
