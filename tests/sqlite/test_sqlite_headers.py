"""SQLite: the headers column is added to a file that lacks it, and left NULL when unused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conveyor.brokers.sqlite import SqliteBroker
from conveyor.headers import encode_headers
from conveyor.message import TaskMessage


async def test_a_file_without_the_column_gains_it_and_keeps_its_tasks(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    broker = SqliteBroker.from_url(url)
    await broker.enqueue([TaskMessage(id="old", type="t")])
    await broker.close()
    with sqlite3.connect(path) as conn:  # as a file written before headers existed
        conn.execute("ALTER TABLE tasks DROP COLUMN headers")
    conn.close()

    broker = SqliteBroker.from_url(url)
    try:
        headers = encode_headers({"tenant": "acme"})
        await broker.enqueue([TaskMessage(id="new", type="t", headers=headers)])
        assert (await broker.get_task("default", "old")).raw_headers is None
        assert dict((await broker.get_task("default", "new")).headers) == {"tenant": "acme"}
    finally:
        await broker.close()
    with sqlite3.connect(path) as conn:
        stored = dict(conn.execute("SELECT id, headers FROM tasks").fetchall())
    conn.close()
    assert stored == {"old": None, "new": headers}
