"""pytest plugin: keep only the tests that talk to Redis (``-p redis_only``, tests/ on sys.path).

scripts/test-oldest-deps runs these against the oldest redis-py and hiredis that pyproject.toml
admits. A test is kept when it lives in tests/redis, carries the ``redis`` marker, uses the
``redis_url`` fixture (directly or through another fixture) or is a Redis case (``redis``,
``redis-acl``, ``redis-tls``) of a parametrized fixture (the conformance suite's ``broker``, the
worker tests' ``broker_url``). ``CONVEYOR_REDIS_KINDS`` (comma-separated) narrows the
parametrized cases to those kinds; tests/redis, which covers each transport itself, is kept
whole.
"""

from __future__ import annotations

import os

import pytest

REDIS_KINDS = ("redis", "redis-acl", "redis-tls")  # tests/conftest.py's Redis broker kinds
KINDS = tuple(os.environ.get("CONVEYOR_REDIS_KINDS", ",".join(REDIS_KINDS)).split(","))


def talks_to_redis(item: pytest.Item) -> bool:
    """Whether ``item`` needs the Redis server (see the module docstring)."""
    if item.path.parent.name == "redis" or item.get_closest_marker("redis") is not None:
        return True
    if "redis_url" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    kinds = callspec.params.values() if callspec is not None else ()
    return any(isinstance(kind, str) and kind in KINDS for kind in kinds)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept = [item for item in items if talks_to_redis(item)]
    dropped = [item for item in items if not talks_to_redis(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
