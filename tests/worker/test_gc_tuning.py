"""Server.run tunes the garbage collector for its worker process."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from conveyor.worker.server import GC_YOUNG_THRESHOLD, _tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_existing_objects_are_frozen_and_young_collections_run_less_often(
    restored_gc: None,
) -> None:
    gc.set_threshold(700, 10, 10)

    _tune_gc()

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)
    assert gc.isenabled()


def test_a_higher_threshold_set_by_the_user_is_kept(restored_gc: None) -> None:
    gc.set_threshold(50_000, 20, 20)

    _tune_gc()

    assert gc.get_threshold() == (50_000, 20, 20)
