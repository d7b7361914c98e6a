"""Choosing the worker's event loop: auto, asyncio or uvloop."""

from __future__ import annotations

import asyncio
import sys

import pytest

from conveyor.errors import ConfigError
from conveyor.worker.loops import loop_factory


def test_asyncio_is_the_standard_loop() -> None:
    assert loop_factory("asyncio") == ("asyncio", None)


def test_auto_and_uvloop_take_uvloop_when_it_is_installed() -> None:
    pytest.importorskip("uvloop", reason="uvloop is not installed here (e.g. Windows)")
    for choice in ("auto", "uvloop"):
        name, factory = loop_factory(choice)
        assert name == "uvloop"
        assert factory is not None
        loop = factory()
        try:
            assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7
            assert type(loop).__module__.startswith("uvloop")
        finally:
            loop.close()


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail

    assert loop_factory("auto") == ("asyncio", None)
    with pytest.raises(ConfigError, match=r"pip install 'conveyor\[uvloop\]'"):
        loop_factory("uvloop")


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ConfigError, match="loop must be one of auto, asyncio, uvloop"):
        loop_factory("trio")
