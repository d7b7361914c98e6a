"""The fixture the model tests' Redis state machines share."""

from __future__ import annotations

import pytest

from conftest import REDIS_URL, redis_available, service_missing


@pytest.fixture
def _redis_up() -> None:
    """Skip (fail in CI) when Redis does not answer."""
    why = redis_available()
    if why is not None:
        service_missing("Redis at " + REDIS_URL, why)
