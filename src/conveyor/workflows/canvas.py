"""The canvas: signatures, chains, groups and chords, as immutable values.

A :class:`Signature` is one task call waiting to happen; ``chain``, ``group`` and ``chord``
compose them (and each other) to any depth. Nothing here touches a broker: a canvas is compiled
into a graph by :mod:`conveyor.workflows.compile` when it is enqueued.

Example::

    flow = chain(fetch.s(url), group(resize.s(64), resize.s(256)), publish.s())
    info = client.enqueue_workflow(flow)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, TypeAlias

from conveyor.message import Payload, validate_name
from conveyor.options import parse_options

if TYPE_CHECKING:
    from conveyor.workflows.info import WorkflowInfo

__all__ = ["Canvas", "Chain", "Chord", "Group", "Signature", "chain", "chord", "group", "signature"]

# Options a step cannot take: its task id is the workflow's to choose, and a unique lock would
# let a duplicate refusal stall a workflow half-way.
_REFUSED_OPTIONS = frozenset({"task_id", "unique"})


class _Enqueuer(Protocol):
    """What ``sig.enqueue()`` calls: the App of ``fn.s(...)``."""

    def enqueue_workflow(self, canvas: Canvas) -> WorkflowInfo: ...

    async def aenqueue_workflow(self, canvas: Canvas) -> WorkflowInfo: ...


def _check_options(options: Mapping[str, object]) -> dict[str, object]:
    refused = sorted(set(options) & _REFUSED_OPTIONS)
    if refused:
        raise TypeError(f"option {refused[0]!r} cannot be set on a workflow step")
    parse_options(options)  # TypeError / ConfigError now, not at enqueue
    return dict(options)


@dataclass(frozen=True, slots=True)
class Signature:
    """One task call in a workflow: type, payload, options and callbacks. Immutable.

    Made by ``fn.s(...)`` / ``fn.si(...)`` on an ``@app.task`` function, or by
    :func:`signature` for a raw task type.

    Attributes:
        task_type: the task type.
        payload: the task's payload (for a task function: its arguments by name, the parent's
            result aside).
        immutable: ignores its parent's result (``si``).
        decorated: made from a task function, which receives its parent's result prepended;
            a raw handler reads ``ctx.parent_result`` instead.
        parent_payload: for a task function, the arguments when its parent's result comes
            first (``None`` when the call cannot take one).
        fits_alone: the call is complete without a parent's result (a first step).
        fits_parent: the call is complete with a parent's result prepended.
        call_options: enqueue options (queue, max_retry, timeout, ...).
        links: success callbacks: each runs after this task succeeded, with its result.
        error_links: error callbacks: each runs once when this task is archived, with its error.
    """

    task_type: str
    payload: Payload = None
    immutable: bool = False
    decorated: bool = False
    call_options: Mapping[str, object] = field(default_factory=dict)
    parent_payload: Payload = None
    fits_alone: bool = True
    fits_parent: bool = False
    links: tuple[Canvas, ...] = ()
    error_links: tuple[Signature, ...] = ()
    enqueuer: _Enqueuer | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_name(self.task_type, what="task type")

    def options(self, **options: object) -> Signature:
        """A copy with these enqueue options set (over any set before).

        Raises:
            TypeError: an unknown option, or ``task_id`` / ``unique`` (a workflow sets ids).
            ConfigError: a bad option value.
        """
        merged = {**self.call_options, **_check_options(options)}
        return replace(self, call_options=merged)

    def link(self, other: Canvas) -> Signature:
        """A copy with a success callback added: ``other`` runs after this task succeeded."""
        _check_item(other)
        return replace(self, links=(*self.links, other))

    def link_error(self, other: Signature) -> Signature:
        """A copy with an error callback added: ``other`` runs once if this task is archived."""
        if not isinstance(other, Signature):
            raise TypeError(f"an error callback must be a Signature, not {type(other).__name__}")
        return replace(self, error_links=(*self.error_links, other))

    def enqueue(self) -> WorkflowInfo:
        """Enqueue this signature as a workflow of its own (``enqueue_workflow(sig)``)."""
        return self._enqueuer().enqueue_workflow(self)

    @property
    def aio(self) -> _AsyncSignature:
        """Async twin: ``await sig.aio.enqueue()``."""
        return _AsyncSignature(self)

    def _enqueuer(self) -> _Enqueuer:
        if self.enqueuer is None:
            raise TypeError(
                "this signature has no app (made by conveyor.signature): "
                "enqueue it with client.enqueue_workflow(sig)"
            )
        return self.enqueuer


@dataclass(frozen=True, slots=True)
class _AsyncSignature:
    sig: Signature

    async def enqueue(self) -> WorkflowInfo:
        """Enqueue the signature as a workflow from async code."""
        return await self.sig._enqueuer().aenqueue_workflow(self.sig)


@dataclass(frozen=True, slots=True)
class Chain:
    """Items run one after the other; each receives the result of the one before."""

    items: tuple[Canvas, ...]


@dataclass(frozen=True, slots=True)
class Group:
    """Items run in parallel; the group's result is the list of their results, in order."""

    items: tuple[Canvas, ...]


@dataclass(frozen=True, slots=True)
class Chord:
    """A group (the header) and a body that runs once, with the list of the header's results."""

    header: Group
    body: Canvas


Canvas: TypeAlias = Signature | Chain | Group | Chord
"""Anything that can be enqueued as a workflow."""


def _check_item(item: object) -> Canvas:
    if not isinstance(item, Signature | Chain | Group | Chord):
        raise TypeError(
            f"workflow items are signatures, chains, groups or chords, not {type(item).__name__}"
        )
    return item


def _items(items: tuple[object, ...], what: str) -> tuple[Canvas, ...]:
    if len(items) == 1 and not isinstance(items[0], Signature | Chain | Group | Chord):
        if not isinstance(items[0], Iterable):
            raise TypeError(f"{what} takes workflow items or one iterable of them")
        items = tuple(items[0])
    if not items:
        raise ValueError(f"a {what} needs at least one item")
    return tuple(_check_item(i) for i in items)


def signature(
    task_type: str, payload: Payload = None, *, immutable: bool = False, **options: object
) -> Signature:
    """A signature for a raw task type (a ``ServeMux`` handler), with enqueue options.

    The handler finds its parent's result in ``ctx.parent_result`` (``None`` when immutable).

    Example::

        flow = chain(signature("image:fetch", {"url": u}), signature("image:resize"))

    Raises:
        InvalidNameError: a bad task type. TypeError / ConfigError: a bad option.
    """
    return Signature(task_type, payload, immutable, False, _check_options(options))


def chain(*items: object) -> Chain:
    """Run ``items`` in order, each receiving the previous one's result.

    A group followed by an item behaves as a chord. Takes items, or one iterable of them.
    """
    return Chain(_items(items, "chain"))


def group(*items: object) -> Group:
    """Run ``items`` in parallel; the result is the list of their results in item order."""
    return Group(_items(items, "group"))


def chord(header: object, body: object) -> Chord:
    """Run ``header`` (a group or an iterable of items), then ``body`` once with their results."""
    head = header if isinstance(header, Group) else group(header)
    return Chord(head, _check_item(body))
