"""Signatures and the canvas: call checks, immutability, options, and what a canvas compiles to."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conveyor import App, ConfigError, PayloadError, Signature, chain, chord, group, signature
from conveyor.brokers.workflow_engine import parse_graph
from conveyor.message import Task, TaskMessage
from conveyor.options import TaskOptions
from conveyor.workflows.compile import compile_with_graph, compile_workflow


@pytest.fixture
def app() -> App:
    app = App("memory://canvas-tests")

    @app.task(name="mul")
    def mul(a: int, b: int) -> int:
        return a * b

    @app.task(name="total")
    def total(values: list[int], *, scale: int = 1) -> int:
        return sum(values) * scale

    @app.task(name="star")
    def star(*values: int) -> int:
        return sum(values)

    @app.task(name="kwonly")
    def kwonly(*, x: int) -> int:
        return x

    return app


def _build(task: Task, options: TaskOptions) -> TaskMessage:
    from conveyor.options import MessageTemplate

    return MessageTemplate.from_options(options).build(task, 1 << 20)


def _steps(canvas: Any) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = json.loads(
        compile_workflow(canvas, _build, retention_s=60).graph
    )["steps"]
    return steps


def test_s_leaves_room_for_the_parent(app: App) -> None:
    mul = app.tasks["mul"]
    sig = mul.s(4)  # mul(<parent>, 4)
    assert sig.fits_parent and not sig.fits_alone  # mul(4) alone lacks b
    assert sig.parent_payload == {"b": 4}


def test_s_rejects_calls_wrong_whatever_the_parent_passes(app: App) -> None:
    mul = app.tasks["mul"]
    with pytest.raises(TypeError):
        mul.s(1, 2, 3)
    with pytest.raises(TypeError):
        mul.s(c=1)
    with pytest.raises(TypeError):
        app.tasks["kwonly"].s()  # no positional slot and x missing


def test_si_is_checked_as_a_full_call(app: App) -> None:
    mul = app.tasks["mul"]
    assert mul.si(2, 3).immutable
    with pytest.raises(TypeError):
        mul.si(2)


def test_s_rejects_non_json_arguments(app: App) -> None:
    with pytest.raises(TypeError):
        app.tasks["mul"].s(object())


def test_signature_is_immutable_and_options_copy(app: App) -> None:
    sig = app.tasks["mul"].s(2)
    other = sig.options(queue="critical", max_retry=1)
    assert sig.call_options == {} and other.call_options == {"queue": "critical", "max_retry": 1}
    assert sig.link(sig).links == (sig,) and sig.links == ()
    with pytest.raises(TypeError):
        sig.options(task_id="x")
    with pytest.raises(TypeError):
        sig.options(nope=1)
    with pytest.raises(ConfigError):
        sig.options(queue="bad queue")
    with pytest.raises(TypeError):
        sig.link_error(chain(sig))  # type: ignore[arg-type]


def test_raw_signature_and_items_are_checked() -> None:
    sig = signature("image:resize", {"w": 64}, queue="images")
    assert isinstance(sig, Signature) and not sig.decorated
    with pytest.raises(TypeError):
        chain(sig, 42)
    with pytest.raises(ValueError):
        group()
    with pytest.raises(TypeError):
        sig.enqueue()  # no app: use client.enqueue_workflow


def test_first_step_uses_the_whole_call_and_later_steps_the_room(app: App) -> None:
    mul = app.tasks["mul"]
    steps = _steps(chain(mul.s(2, 3), mul.s(4)))
    assert json.loads(steps[0]["payload"]) == {"a": 2, "b": 3} and not steps[0]["prepend"]
    assert json.loads(steps[1]["payload"]) == {"b": 4} and steps[1]["prepend"]
    assert steps[1]["deps"] == [0] and steps[1]["input"] == 0


def test_a_step_that_cannot_take_a_parent_is_refused(app: App) -> None:
    mul = app.tasks["mul"]
    with pytest.raises(TypeError, match="si"):
        compile_workflow(chain(mul.s(1, 2), mul.s(3, 4)), _build, retention_s=1)
    with pytest.raises(TypeError, match="no parent"):
        compile_workflow(app.tasks["total"].s(scale=2), _build, retention_s=1)


def test_group_then_step_is_a_chord_and_group_after_group_gets_the_list(app: App) -> None:
    mul, total = app.tasks["mul"], app.tasks["total"]
    as_chain = _steps(chain(group(mul.s(1, 1), mul.s(2, 2)), total.s()))
    as_chord = _steps(chord([mul.s(1, 1), mul.s(2, 2)], total.s()))
    assert [s["input"] for s in as_chain] == [s["input"] for s in as_chord] == [None, None, [0, 1]]
    twice = _steps(chain(group(mul.s(1, 1), mul.s(2, 2)), group(total.s(), total.s())))
    assert twice[2]["input"] == twice[3]["input"] == [0, 1]


def test_var_positional_gets_the_parent_first(app: App) -> None:
    star = app.tasks["star"]
    sig = star.s(2, 3)
    assert sig.parent_payload == {"values": [2, 3]}
    from conveyor.workflows.arguments import prepend_parent

    assert prepend_parent(star._signature, {"values": [2, 3]}, 1) == {"values": [1, 2, 3]}


def test_compiled_graph_parses_back_with_positions(app: App) -> None:
    mul, total = app.tasks["mul"], app.tasks["total"]
    new = compile_workflow(
        chain(mul.s(1, 1).link_error(total.si([0])), chord([mul.s(2)], total.s())),
        _build,
        retention_s=5,
    )
    graph = parse_graph(new.graph)
    assert [s.position for s in graph.steps] == ["0.0", "0.0.error0", "0.1.header.0", "0.1.body"]
    assert graph.steps[1].trigger == 0 and graph.steps[0].errbacks == (1,)
    assert [m.id for m in new.first] == [graph.steps[0].message.id]
    assert graph.result == 3


def test_the_compiled_graph_is_the_stored_graph_parsed(app: App) -> None:
    # enqueue_workflow builds its info from the graph compile_with_graph made, not parsed back.
    mul, total = app.tasks["mul"], app.tasks["total"]
    canvas = chain(
        mul.s(1, 1).link_error(total.si([0])).link(mul.s(3)),
        group(chain(mul.s(2), mul.s(5)), mul.s(4).options(queue="other", timeout=9)),
        chord([mul.s(2), mul.s(6)], total.s()),
        mul.s(7),
        signature("blob", b"\x00\xffraw", queue="q1"),
    )
    new, graph = compile_with_graph(canvas, _build, retention_s=5)
    stored = parse_graph(new.graph)
    assert tuple(graph.steps) == tuple(stored.steps)
    assert graph.result == stored.result
    assert graph.error_callbacks == stored.error_callbacks == (2,)


def test_a_graph_step_is_made_when_first_used(app: App) -> None:
    mul, total = app.tasks["mul"], app.tasks["total"]
    new = compile_workflow(chord([mul.s(1, 1), mul.s(2, 1)], total.s()), _build, retention_s=5)
    raw = json.loads(new.graph)
    raw["steps"][1]["enc"] = "no-such-encoding"  # a damaged step
    graph = parse_graph(json.dumps(raw).encode())
    assert graph.steps[0] is graph.steps[0]  # made once, then kept
    assert graph.steps[2].deps == (0, 1)
    # The damage shows where the step is first used, and again at each use.
    with pytest.raises(PayloadError):
        graph.steps[1]
    with pytest.raises(PayloadError):
        list(graph.steps)


def test_raw_bytes_payload_survives_the_graph() -> None:
    new = compile_workflow(signature("blob", b"\x00\xffraw", queue="q1"), _build, retention_s=1)
    [step] = parse_graph(new.graph).steps
    assert step.message.payload == b"\x00\xffraw" and step.message.queue == "q1"
    assert new.first == (step.message,)
