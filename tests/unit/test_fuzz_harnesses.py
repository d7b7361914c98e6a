"""The fuzz harnesses (fuzz/fuzz_*.py) run over a few fixed inputs, so they cannot rot.

Each harness's ``test_one_input`` is plain Python: without atheris it reads its bytes through a
small stand-in for ``atheris.FuzzedDataProvider``. This runs them as the fuzzer would, on seeds
that reach most of their branches, and fails on any error a harness does not allow.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
HARNESSES = sorted(p.stem for p in FUZZ_DIR.glob("fuzz_*.py"))
SEEDS = [b"", b"\x00", b"\xff" * 64, bytes(range(256)), b"redis://user:pw@host:6379/0?x=1"]
SEEDS += [random.Random(n).randbytes(n * 7 % 200) for n in range(60)]


def _load(name: str) -> ModuleType:
    if str(FUZZ_DIR) not in sys.path:
        sys.path.insert(0, str(FUZZ_DIR))  # the harnesses import their sibling _hostile
    spec = importlib.util.spec_from_file_location(name, FUZZ_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_decoder_has_a_harness() -> None:
    expected = {"fuzz_message", "fuzz_redis_records", "fuzz_sqlite_rows", "fuzz_broker_urls",
                "fuzz_options", "fuzz_schedules",
                "fuzz_server_parsers"}  # fmt: skip
    assert expected <= set(HARNESSES)
    assert set(DECODERS) == set(HARNESSES)  # each has its negative control below


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_accepts_its_seeds(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The checks are the harness's own asserts: any one failing, or any error it does not
    # allow escaping, fails this test.
    monkeypatch.setitem(sys.modules, "atheris", None)  # the stand-in provider, atheris or not
    check: Callable[[bytes], None] = _load(name).test_one_input
    for seed in SEEDS:
        check(seed)


class _Untyped(Exception):
    """An error no decoder documents: every harness must let it escape."""


def _raise(*_args: object, **_kwargs: object) -> None:
    raise _Untyped


# Where each harness reaches its decoder: (object in the harness module, attribute).
DECODERS = {
    "fuzz_message": ("", "decode_json"),
    "fuzz_broker_urls": ("", "parse_redis_url"),
    "fuzz_options": ("", "parse_options"),
    "fuzz_schedules": ("", "parse_spec"),
    "fuzz_redis_records": ("records", "decode_record"),
    "fuzz_sqlite_rows": ("rows", "task_info"),
    "fuzz_server_parsers": ("masenko_wire", "parse_push"),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_harness_catches_an_untyped_error(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The negative control: a decoder that raises what it must not is caught by some seed.
    monkeypatch.setitem(sys.modules, "atheris", None)
    module = _load(name)
    owner, attribute = DECODERS[name]
    monkeypatch.setattr(getattr(module, owner) if owner else module, attribute, _raise)
    with pytest.raises(_Untyped):
        for seed in SEEDS:
            module.test_one_input(seed)
