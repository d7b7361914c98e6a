"""The one result-passing rule for task functions: the parent's result is prepended.

``fn.s(*args)`` is checked as ``fn(<parent>, *args)``: the parent's result fills the first
positional parameter (or opens ``*args``), so ``mul.s(4)`` for ``mul(a, b)`` stores ``{"b": 4}``
and the worker calls ``mul(<parent>, 4)``. The payload keeps arguments by name, as ``enqueue``
stores them; the worker puts the parent's value back under the first positional parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from conveyor.message import JSONValue

__all__ = ["prepend_parent", "with_room_for_parent"]

_POSITIONAL = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.VAR_POSITIONAL,
)


class _Parent:
    """Stands for the parent's result while a call is checked."""

    def __repr__(self) -> str:
        return "<parent result>"


_PARENT = _Parent()


def _first_positional(signature: inspect.Signature) -> inspect.Parameter | None:
    for param in signature.parameters.values():
        if param.kind in _POSITIONAL:
            return param
    return None


def _simple_names(signature: inspect.Signature) -> list[str] | None:
    """The parameters' names when every one is positional-or-keyword without a default."""
    names = []
    for param in signature.parameters.values():
        if param.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            return None
        if param.default is not inspect.Parameter.empty:
            return None
        names.append(param.name)
    return names


def with_room_for_parent(
    signature: inspect.Signature, name: str, args: tuple[object, ...], kwargs: Mapping[str, object]
) -> tuple[JSONValue, JSONValue]:
    """Check a call as a first step and with its parent's result first.

    Returns the arguments by name for each reading, ``None`` for one that does not fit: a first
    step of a chain has no parent, so ``add.s(1, 2)`` is a whole call there, while ``mul.s(4)``
    only fits after a parent.

    Raises:
        TypeError: the call fits neither way (too many arguments, an unknown keyword...).
    """
    simple = _simple_names(signature) if not kwargs else None
    if simple is not None:
        # What binding gives for plain parameters and positional arguments, without binding
        # twice (a chord's thousand members): each reading fits only with exactly its count.
        whole = dict(zip(simple, args, strict=True)) if len(args) == len(simple) else None
        parented = (
            dict(zip(simple[1:], args, strict=True)) if len(args) == len(simple) - 1 else None
        )
        if whole is not None or parented is not None:
            return whole, parented
    try:
        with_parent = signature.bind(_PARENT, *args, **kwargs)
    except TypeError as exc:
        with_parent_error: TypeError | None = exc
        with_parent = None
    else:
        with_parent_error = None
    try:
        alone: JSONValue = _by_name(signature, signature.bind(*args, **kwargs))
    except TypeError:
        if with_parent is None:
            raise TypeError(
                f"{name}{signature} with its parent's result first: {with_parent_error}"
            ) from None
        alone = None
    return alone, None if with_parent is None else _by_name(signature, with_parent)


def _by_name(signature: inspect.Signature, bound: inspect.BoundArguments) -> dict[str, JSONValue]:
    payload: dict[str, JSONValue] = {}
    for key, value in bound.arguments.items():
        kind = signature.parameters[key].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            rest = [v for v in value if v is not _PARENT]
            if rest:
                payload[key] = rest
        elif value is not _PARENT:
            payload[key] = value
    return payload


def prepend_parent(
    signature: inspect.Signature, payload: Mapping[str, JSONValue], value: JSONValue
) -> dict[str, JSONValue]:
    """The arguments of a stored step with its parent's ``value`` put first."""
    first = _first_positional(signature)
    merged = dict(payload)
    if first is None:
        return merged  # nowhere to put it: the call check reports the mismatch
    if first.kind is inspect.Parameter.VAR_POSITIONAL:
        given = merged.get(first.name)
        merged[first.name] = [value, *(given if isinstance(given, list) else [])]
    else:
        merged[first.name] = value
    return merged
