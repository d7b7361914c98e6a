"""Key names: injective over (queue, id) and (queue, unique key), one Cluster slot per queue."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from conveyor.brokers.redis import keys
from conveyor.errors import InvalidNameError

NAMES = st.from_regex(r"[A-Za-z0-9_.:-]{1,40}", fullmatch=True)
ANY_TEXT = st.text(min_size=1, max_size=40)


@given(ns=NAMES, a=st.tuples(NAMES, NAMES), b=st.tuples(NAMES, NAMES))
def test_task_keys_are_injective(ns: str, a: tuple[str, str], b: tuple[str, str]) -> None:
    assert (keys.task(ns, *a) == keys.task(ns, *b)) == (a == b)


@given(ns=NAMES, a=st.tuples(NAMES, ANY_TEXT), b=st.tuples(NAMES, ANY_TEXT))
def test_unique_lock_keys_are_injective(ns: str, a: tuple[str, str], b: tuple[str, str]) -> None:
    assert (keys.unique_lock(ns, *a) == keys.unique_lock(ns, *b)) == (a == b)


@given(ns=NAMES, queue=NAMES, task_id=NAMES, ukey=ANY_TEXT)
def test_kinds_of_key_never_collide(ns: str, queue: str, task_id: str, ukey: str) -> None:
    qk = keys.queue_keys(ns, queue)
    fixed = set(qk.block[: len(keys.QUEUE_KEY_NAMES)])
    assert len(fixed) == len(keys.QUEUE_KEY_NAMES)
    task_key = keys.task(ns, queue, task_id)
    lock_key = keys.unique_lock(ns, queue, ukey)
    assert task_key != lock_key
    assert task_key not in fixed and lock_key not in fixed
    assert keys.registry(ns) not in fixed | {task_key, lock_key}


@given(ns=NAMES, q1=NAMES, q2=NAMES, task_id=NAMES, ukey=ANY_TEXT)
def test_queue_keys_of_different_queues_differ(
    ns: str, q1: str, q2: str, task_id: str, ukey: str
) -> None:
    if q1 == q2:
        return
    k1, k2 = keys.queue_keys(ns, q1), keys.queue_keys(ns, q2)
    assert not set(k1.block) & set(k2.block)
    assert keys.task(ns, q1, task_id) != keys.task(ns, q2, task_id)


@given(ns=NAMES, queue=NAMES, task_id=NAMES, ukey=ANY_TEXT)
def test_every_key_of_a_queue_shares_one_cluster_slot(
    ns: str, queue: str, task_id: str, ukey: str
) -> None:
    qk = keys.queue_keys(ns, queue)
    slots = {key_slot(k.encode()) for k in qk.block}
    slots.add(key_slot(keys.task(ns, queue, task_id).encode()))
    slots.add(key_slot(keys.unique_lock(ns, queue, ukey).encode()))
    assert slots == {key_slot(queue.encode())}


@given(ns=NAMES, queue=NAMES, task_id=NAMES)
def test_scripts_build_task_keys_as_prefix_plus_id(ns: str, queue: str, task_id: str) -> None:
    qk = keys.queue_keys(ns, queue)
    assert qk.task_prefix + task_id == keys.task(ns, queue, task_id)
    assert keys.task(ns, queue, task_id).startswith(f"{ns}:")


@pytest.mark.parametrize("queue", ["", "a{b}", "has space", "x" * 256])
def test_queue_names_outside_the_rule_are_refused(queue: str) -> None:
    with pytest.raises(InvalidNameError):
        keys.queue_keys("conveyor", queue)
