"""TEXT that is not UTF-8, written into a real file by something else (a tool, disk damage, a bad
restore): sqlite3 refuses to fetch such a value as ``str``, so before the fix one such row made
every claim of its queue, and every listing reaching it, fail. Now the claim archives the row
with a reason, and readers show the text with U+FFFD; nothing else is lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor.brokers.sqlite import SqliteBroker
from conveyor.errors import DuplicateTaskError, QueueNotEmptyError
from conveyor.message import Completion, TaskMessage, TaskState

BAD = "CAST(x'ff41' AS TEXT)"  # 0xff never appears in UTF-8
SHOWN = "\ufffdA"


def message(task_id: str, **fields: object) -> TaskMessage:
    return TaskMessage(id=task_id, type="t", payload=b'{"n":1}', **fields)  # type: ignore[arg-type]


def raw_sql(path: Path, sql: str) -> None:
    """Write past the broker, as another program would."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql)
    finally:
        conn.close()


def stored_bytes(path: Path, column: str, seq: int) -> bytes:
    conn = sqlite3.connect(path)
    try:
        # The column name comes from this module's parametrize lists only.
        return bytes(
            conn.execute(
                f"SELECT CAST({column} AS BLOB) FROM tasks WHERE seq = ?", (seq,)
            ).fetchone()[0]
        )
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("column", "setup"),
    [
        ("id", ""),
        ("type", ""),
        ("state", ""),
        ("encoding", ""),
        ("unique_key", ""),
        # A RETRY task that is due: reached by the claim_due query, not claim_pending.
        ("last_error", ", state = 'retry', ready_at = 0, retried = 1"),
    ],
)
async def test_claim_archives_the_damaged_row_and_claims_the_rest(
    tmp_path: Path, column: str, setup: str
) -> None:
    path = tmp_path / "damaged.db"
    broker = SqliteBroker(path)
    await broker.enqueue([message("first"), message("bad", unique_key="k"), message("last")])
    await broker.enqueue([message("elsewhere", queue="q2")])
    raw_sql(path, f"UPDATE tasks SET {column} = {BAD}{setup} WHERE seq = 2")

    leases = await broker.claim(["default", "q2"], limit=10, lease_s=30)

    assert [le.task.id for le in leases] == ["first", "last", "elsewhere"]
    stats = await broker.queue_stats("default")
    assert (stats.pending, stats.active, stats.archived) == (0, 2, 1)
    [archived] = await broker.list_tasks("default", TaskState.ARCHIVED)
    assert archived.state is TaskState.ARCHIVED
    assert f"undecodable task record: {column} is not UTF-8 text (b'\\xffA')" == (
        archived.last_error
    )
    if column in ("id", "type", "unique_key"):
        assert getattr(archived, column) == SHOWN  # shown, not hidden
        assert stored_bytes(path, column, 2) == b"\xffA"  # the stored bytes are kept as they were
    # (archiving sets the state, an unknown encoding to 'bytes', and the reason as last_error)
    assert stored_bytes(path, "payload", 2) == b'{"n":1}'
    if column != "id":
        assert (await broker.get_task("default", "bad")).state is TaskState.ARCHIVED
    # The healthy tasks complete, and the queue keeps flowing.
    assert await broker.complete([Completion(lease=le) for le in leases]) == [True] * 3
    await broker.enqueue([message("next")])
    assert [le.task.id for le in await broker.claim(["default"], limit=10, lease_s=30)] == ["next"]
    assert await broker.delete_tasks("default", TaskState.ARCHIVED) == 1
    await broker.close()


async def test_more_damaged_rows_than_the_claim_limit(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    broker = SqliteBroker(path)
    await broker.enqueue([message(f"bad-{n}") for n in range(5)] + [message("good")])
    raw_sql(path, f"UPDATE tasks SET type = {BAD} WHERE id LIKE 'bad-%'")

    leases = await broker.claim(["default"], limit=2, lease_s=30)

    assert [le.task.id for le in leases] == ["good"]
    stats = await broker.queue_stats("default")
    assert (stats.pending, stats.active, stats.archived) == (0, 1, 5)
    assert len(await broker.list_tasks("default", TaskState.ARCHIVED)) == 5
    await broker.close()


async def test_listings_show_a_waiting_damaged_row_before_any_claim(tmp_path: Path) -> None:
    path = tmp_path / "listing.db"
    broker = SqliteBroker(path)
    await broker.enqueue([message("a"), message("b"), message("c")])
    raw_sql(path, f"UPDATE tasks SET type = {BAD}, last_error = {BAD} WHERE id = 'b'")

    listed = await broker.list_tasks("default", TaskState.PENDING)

    assert [(t.id, t.type) for t in listed] == [("a", "t"), ("b", SHOWN), ("c", "t")]
    assert listed[1].last_error == SHOWN
    info = await broker.get_task("default", "b")
    assert (info.state, info.type) == (TaskState.PENDING, SHOWN)
    assert (await broker.queue_stats("default")).pending == 3
    await broker.close()


async def test_a_damaged_state_is_counted_nowhere_but_blocks_no_stats(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    broker = SqliteBroker(path)
    await broker.enqueue([message("a"), message("b")])
    raw_sql(path, f"UPDATE tasks SET state = {BAD} WHERE id = 'b'")

    stats = await broker.queue_stats("default")  # counts by state read the state as text

    assert (stats.pending, stats.archived) == (1, 0)
    with pytest.raises(QueueNotEmptyError):
        await broker.delete_queue("default", force=False)
    await broker.delete_queue("default", force=True)
    assert (await broker.queue_stats("default")).pending == 0
    await broker.close()


async def test_damaged_queue_names_block_no_claim_and_no_listing(tmp_path: Path) -> None:
    path = tmp_path / "queues.db"
    broker = SqliteBroker(path)
    await broker.enqueue([message("a"), message("b")])
    raw_sql(path, f"INSERT INTO queues (name, paused) VALUES ({BAD}, 1)")  # a paused one
    raw_sql(path, f"UPDATE tasks SET queue = {BAD} WHERE id = 'b'")

    leases = await broker.claim(["default"], limit=10, lease_s=30)

    assert [le.task.id for le in leases] == ["a"]
    assert sorted(await broker.list_queues()) == ["default", SHOWN]
    # A name that is not UTF-8 matches no name a program can pass: the task stays, unreachable
    # by claim, and nothing else is touched.
    assert (await broker.queue_stats(SHOWN)).pending == 0
    await broker.close()


async def lapsed_with_damaged(path: Path, column: str) -> SqliteBroker:
    """Tasks "a" and "b" claimed, their leases lapsed, then ``column`` of "b" damaged."""
    broker = SqliteBroker(path)
    await broker.enqueue([message("a"), message("b")])
    await broker.claim(["default"], limit=10, lease_s=30)
    raw_sql(path, "UPDATE tasks SET lease_expires_at = 0")
    # The column name comes from this module's tests only.
    raw_sql(path, f"UPDATE tasks SET {column} = {BAD} WHERE id = 'b'")
    return broker


async def test_recovery_survives_a_lapsed_task_whose_queue_was_damaged(tmp_path: Path) -> None:
    broker = await lapsed_with_damaged(tmp_path / "recover.db", "queue")

    assert await broker.recover_expired(delay_s=0) == 2

    assert (await broker.get_task("default", "a")).state is TaskState.RETRY
    assert (await broker.queue_stats("default")).failed_today == 1
    await broker.close()


async def test_deleting_a_damaged_task_releases_its_unique_key(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    broker = SqliteBroker(path)
    await broker.enqueue([message("a", unique_key="k")])
    raw_sql(path, f"UPDATE tasks SET type = {BAD} WHERE id = 'a'")
    with pytest.raises(DuplicateTaskError):
        await broker.enqueue([message("b", unique_key="k")])

    await broker.delete_task("default", "a")

    await broker.enqueue([message("b", unique_key="k")])
    assert [le.task.id for le in await broker.claim(["default"], limit=10, lease_s=30)] == ["b"]
    await broker.close()


async def test_a_completion_reads_no_text_of_its_task(tmp_path: Path) -> None:
    path = tmp_path / "complete.db"
    broker = SqliteBroker(path)
    await broker.enqueue([message("a", unique_key="k")])
    [lease] = await broker.claim(["default"], limit=1, lease_s=30)
    raw_sql(path, f"UPDATE tasks SET type = {BAD}, last_error = {BAD} WHERE id = 'a'")

    assert await broker.complete([Completion(lease=lease)]) == [True]

    await broker.enqueue([message("b", unique_key="k")])  # the lock was released
    assert (await broker.queue_stats("default")).pending == 1
    await broker.close()


async def test_recovery_survives_a_lapsed_task_whose_id_was_damaged(tmp_path: Path) -> None:
    # recover_spread (a Python function) reads the id: it gets the stored bytes.
    broker = await lapsed_with_damaged(tmp_path / "recover-id.db", "id")

    assert await broker.recover_expired(delay_s=0) == 2

    assert (await broker.get_task("default", "a")).state is TaskState.RETRY
    leases = await broker.claim(["default"], limit=10, lease_s=30)
    assert [le.task.id for le in leases] == ["a"]  # the damaged one is archived by this claim
    assert (await broker.queue_stats("default")).archived == 1
    await broker.close()


async def test_a_lock_held_under_a_damaged_id_still_refuses_its_key(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    broker = SqliteBroker(path)
    await broker.enqueue([message("holder", unique_key="k")])
    raw_sql(path, f"UPDATE unique_locks SET task_id = {BAD}")

    with pytest.raises(DuplicateTaskError):  # not a BrokerError from the fetch
        await broker.enqueue([message("second", unique_key="k")])
    await broker.enqueue([message("free", unique_key="other")])
    [lease] = await broker.claim(["default"], limit=1, lease_s=30)
    assert lease.task.id == "holder"
    await broker.close()
