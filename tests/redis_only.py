"""pytest plugin: keep only the tests that talk to Redis (``-p redis_only``, tests/ on sys.path).

scripts/test-oldest-deps runs these against the oldest redis-py and hiredis that pyproject.toml
admits. A test is kept when it lives in tests/redis, carries the ``redis`` marker, uses the
``redis_url`` fixture (directly or through another fixture) or is a Redis case (``redis``,
``redis-acl``, ``redis-tls``) of a parametrized fixture (the conformance suite's ``broker``, the
worker tests' ``broker_url``).
"""

from __future__ import annotations

import pytest

REDIS_KINDS = ("redis", "redis-acl", "redis-tls")  # tests/conftest.py's Redis broker kinds


def talks_to_redis(item: pytest.Item) -> bool:
    """Whether ``item`` needs the Redis server (see the module docstring)."""
    if item.path.parent.name == "redis" or item.get_closest_marker("redis") is not None:
        return True
    if "redis_url" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    kinds = callspec.params.values() if callspec is not None else ()
    return any(isinstance(kind, str) and kind in REDIS_KINDS for kind in kinds)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept = [item for item in items if talks_to_redis(item)]
    dropped = [item for item in items if not talks_to_redis(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
