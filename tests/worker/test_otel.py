"""TracingMiddleware: one OpenTelemetry span per attempt, handlers' spans nested in it."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor.brokers.memory import MemoryBroker
from conveyor.message import JSONValue, Task, TaskState
from conveyor.mux import ServeMux
from conveyor.otel import TracingMiddleware
from conveyor.worker.context import TaskContext
from conveyor.worker.server import Server
from worker.harness import enqueue, fast, serving, wait_for_state


async def test_each_attempt_is_a_span_and_handler_spans_are_its_children() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    inner = provider.get_tracer("test")

    def sync_ok(ctx: TaskContext, task: Task) -> JSONValue:
        with inner.start_as_current_span("query"):  # in the pool's thread
            return 1

    async def async_fail(ctx: TaskContext, task: Task) -> JSONValue:
        with inner.start_as_current_span("call"):
            raise ValueError("nope")

    mux = ServeMux()
    mux.use(TracingMiddleware(tracer_provider=provider))
    mux.handle("sync:ok", sync_ok)
    mux.handle("async:fail", async_fail)
    broker = MemoryBroker()
    try:
        async with serving(Server(broker, **fast()), mux):
            ok = await enqueue(broker, "sync:ok")
            bad = await enqueue(broker, "async:fail", max_retry=1)
            await wait_for_state(broker, bad, TaskState.ARCHIVED)
    finally:
        await broker.close()

    spans = exporter.get_finished_spans()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [ok_span] = by_name["sync:ok process"]
    assert ok_span.kind is SpanKind.CONSUMER
    assert dict(ok_span.attributes or {}) == {
        "messaging.system": "conveyor",
        "messaging.operation.type": "process",
        "messaging.destination.name": "default",
        "messaging.message.id": ok.id,
        "conveyor.task.type": "sync:ok",
        "conveyor.task.attempt": 1,
    }
    [query] = by_name["query"]
    assert query.parent is not None and query.parent.span_id == ok_span.context.span_id
    failed = by_name["async:fail process"]
    assert [(s.attributes or {})["conveyor.task.attempt"] for s in failed] == [1, 2]
    assert all(s.status.status_code is StatusCode.ERROR for s in failed)
    assert all(e.name == "exception" for s in failed for e in s.events)
    calls = by_name["call"]
    assert {c.parent.span_id for c in calls if c.parent} == {s.context.span_id for s in failed}
    assert {s.attributes["messaging.message.id"] for s in failed if s.attributes} == {bad.id}
