"""Which event loop :meth:`Server.run <conveyor.worker.server.Server.run>` runs on.

``asyncio`` is the standard library's loop. ``uvloop`` (``pip install 'conveyor[uvloop]'``, not
on Windows) is a drop-in loop built on libuv: less CPU per callback and per socket read, which is
most of what a worker does between handlers. ``auto``, the default, takes uvloop when it is
installed and asyncio otherwise, as uvicorn's ``--loop auto`` does.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Literal

from conveyor.errors import ConfigError

__all__ = ["LOOP_CHOICES", "LoopChoice", "loop_factory"]

LoopChoice = Literal["auto", "asyncio", "uvloop"]
LOOP_CHOICES: tuple[LoopChoice, ...] = ("auto", "asyncio", "uvloop")
"""The accepted values of ``loop``."""


def loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The loop's name and how to make it (``None``: asyncio's default) for ``choice``.

    Raises:
        ConfigError: an unknown choice, or ``uvloop`` asked for but not installed.
    """
    if choice not in LOOP_CHOICES:
        raise ConfigError(f"loop must be one of {', '.join(LOOP_CHOICES)}; got {choice!r}")
    if choice == "asyncio":
        return "asyncio", None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "loop 'uvloop' needs the uvloop package: pip install 'conveyor[uvloop]'"
            ) from None
        return "asyncio", None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return "uvloop", factory
