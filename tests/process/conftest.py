"""Fixtures of the process tests: a trace folder, a fresh broker URL, and worker cleanup."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# The Redis server harness (private redis-server processes) lives with the Redis tests.
sys.path.insert(0, str(Path(__file__).parent.parent / "redis"))

from processes import Worker, stop_leftovers

from support import delete_namespace


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test() -> Iterator[None]:
    yield
    stop_leftovers()


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "trace"
    directory.mkdir()
    return directory


@pytest.fixture(params=("sqlite", "redis"))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh broker for the test's worker processes: an SQLite file or a Redis namespace."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
        return
    redis_url = request.getfixturevalue("redis_url")
    namespace = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    yield f"{redis_url}?namespace={namespace}"
    asyncio.run(delete_namespace(redis_url, namespace))


@pytest.fixture
def workers(url: str, trace_dir: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()
