"""Reading and clamping what a request asks for: state, page, size. Bad input is a 400, and
numbers are clamped so no request can ask the broker for an unbounded page."""

from __future__ import annotations

from starlette.requests import Request

from conveyor.errors import ConfigError
from conveyor.message import TaskState

PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def state_param(request: Request, default: TaskState = TaskState.PENDING) -> TaskState:
    """The ``state`` query parameter (default ``pending``).

    Raises:
        ConfigError: not a task state.
    """
    raw = request.query_params.get("state") or request.path_params.get("state")
    if raw is None:
        return default
    try:
        return TaskState(raw)
    except ValueError:
        names = ", ".join(s.value for s in TaskState)
        raise ConfigError(f"unknown task state: must be one of {names}") from None


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter clamped to ``[low, high]``; junk reads as ``default``."""
    raw = request.query_params.get(name, "")
    try:
        value = int(raw) if raw.isdigit() and len(raw) < 10 else default
    except ValueError:
        value = default
    return max(low, min(value, high))


def pages_for(total: int, size: int) -> int:
    """How many pages ``total`` tasks fill (at least one, so an empty list has a page 1)."""
    return max(1, -(-total // size))
