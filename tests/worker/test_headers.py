"""Headers reach the handler (``ctx.headers``, ``task.headers``), and carry the producer's trace."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from conveyor import AsyncClient
from conveyor.brokers.protocol import Broker
from conveyor.message import JSONValue, Task, TaskState
from conveyor.mux import ServeMux
from conveyor.worker.context import TaskContext
from conveyor.worker.server import Server
from support import eventually
from worker.harness import fast, serving


def count_reaches(items: list[object], n: int) -> object:
    async def reached() -> bool:
        return len(items) >= n

    return reached


async def test_the_handler_sees_the_headers_on_every_attempt(url_broker: Broker) -> None:
    seen: list[tuple[dict[str, str], Mapping[str, str] | None]] = []

    def flaky(ctx: TaskContext, task: Task) -> JSONValue:
        seen.append((dict(ctx.headers), task.headers))
        if len(seen) == 1:
            raise ValueError("first attempt fails")
        return None

    def plain(ctx: TaskContext, task: Task) -> JSONValue:
        seen.append((dict(ctx.headers), task.headers))
        return None

    mux = ServeMux()
    mux.handle("flaky", flaky)
    mux.handle("plain", plain)
    client = AsyncClient(url_broker)
    info = await client.enqueue(Task("flaky", None, {"tenant": "acme"}), retention=60)
    async with serving(Server(url_broker, **fast()), mux):

        async def done() -> bool:
            return (await url_broker.get_task("default", info.id)).state is TaskState.COMPLETED

        await eventually(done)
        await client.enqueue(Task("plain"))
        await eventually(count_reaches(seen, 3))  # type: ignore[arg-type]

    assert [h for h, _ in seen] == [{"tenant": "acme"}, {"tenant": "acme"}, {}]
    assert [dict(t) if t is not None else None for _, t in seen] == [
        {"tenant": "acme"},
        {"tenant": "acme"},
        None,
    ]


async def test_the_task_span_is_a_child_of_the_producer_span(url_broker: Broker) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from conveyor.otel import TracingMiddleware

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[dict[str, str]] = []

    def handler(ctx: TaskContext, task: Task) -> JSONValue:
        seen.append(dict(ctx.headers))
        return None

    mux = ServeMux()
    mux.use(TracingMiddleware(tracer_provider=provider))
    mux.handle("traced", handler)
    client = AsyncClient(url_broker)
    with provider.get_tracer("test").start_as_current_span("request") as request:
        await client.enqueue(Task("traced", 1))
    await client.enqueue(Task("traced", 2))  # outside any span: a trace of its own
    async with serving(Server(url_broker, **fast()), mux):
        await eventually(count_reaches(seen, 2))  # type: ignore[arg-type]

    spans = {s.name: s for s in exporter.get_finished_spans() if s.name != "traced process"}
    process = [s for s in exporter.get_finished_spans() if s.name == "traced process"]
    producer = request.get_span_context()
    assert spans["request"].context.span_id == producer.span_id
    children = [s for s in process if s.parent is not None]
    assert len(children) == 1 and len(process) == 2
    [child] = children
    assert child.parent is not None and child.parent.span_id == producer.span_id
    assert child.context.trace_id == producer.trace_id
    [orphan] = [s for s in process if s.parent is None]
    assert orphan.context.trace_id != producer.trace_id
    carried = [h for h in seen if h]
    assert len(carried) == 1 and list(carried[0]) == ["traceparent"]  # W3C trace context
    ids = f"{producer.trace_id:032x}-{producer.span_id:016x}"
    assert carried[0]["traceparent"].startswith(f"00-{ids}-")


async def test_a_task_with_damaged_stored_headers_is_archived_unrun() -> None:
    from conveyor.brokers.memory import MemoryBroker
    from conveyor.message import TaskMessage

    ran: list[str] = []
    mux = ServeMux()
    mux.handle("t", lambda ctx, task: ran.append(task.type))
    broker = MemoryBroker()
    try:
        await broker.enqueue([TaskMessage(id="bad", type="t", headers=b"[not an object]")])
        async with serving(Server(broker, **fast()), mux):

            async def archived() -> bool:
                return (await broker.get_task("default", "bad")).state is TaskState.ARCHIVED

            await eventually(archived)
        info = await broker.get_task("default", "bad")
    finally:
        await broker.close()
    assert ran == [] and "stored headers" in (info.last_error or "")
