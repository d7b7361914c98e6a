-- Pipeline progress on the SQLite broker (see conveyor/brokers/progress.py), loaded by
-- progress.py like queries.sql: a "-- name: <name>" line, comment lines, then the statement.
-- Positional parameters are listed in each comment in order.

-- name: create_progress
-- The table and the trigger that deletes a task's progress with its row, whatever deletes it
-- (completion without retention, purge, delete, delete_queue): so a task re-created under the
-- same id never sees an old document. Idempotent; run on every connection open, outside the
-- versioned schema.sql.
CREATE TABLE IF NOT EXISTS task_progress (
    queue    TEXT NOT NULL,
    id       TEXT NOT NULL,
    progress BLOB NOT NULL,
    PRIMARY KEY (queue, id)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS task_progress_purge AFTER DELETE ON tasks
BEGIN
    DELETE FROM task_progress WHERE queue = old.queue AND id = old.id;
END;

-- name: save_progress
-- Store a task's progress, only while it is ACTIVE under the lease's token (no row: refused).
-- Params: queue, id, progress, token
INSERT INTO task_progress (queue, id, progress)
SELECT queue, id, ?3 FROM tasks WHERE queue = ?1 AND id = ?2 AND state = 'active' AND token = ?4
ON CONFLICT (queue, id) DO UPDATE SET progress = excluded.progress;

-- name: load_progress
-- A task's progress document (no row: none).
-- Params: queue, id
SELECT progress FROM task_progress WHERE queue = ? AND id = ?;

-- name: resume_progress
-- Replace an ARCHIVED task's progress if it still equals the expected document.
-- Params: queue, id, progress, expected
UPDATE task_progress SET progress = ?3
WHERE queue = ?1 AND id = ?2 AND progress = ?4
  AND EXISTS (SELECT 1 FROM tasks WHERE queue = ?1 AND id = ?2 AND state = 'archived');
