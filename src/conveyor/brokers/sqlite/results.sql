-- results.sql: who waits on a task's result (client.wait), so a completion knows to wake them.
-- Tables are created when a connection opens (IF NOT EXISTS: idempotent, no schema version
-- bump); the named queries follow.

-- name: create_result_waits
-- One row per waiting call; a row left by a waiter that died only costs one extra wake-up.
CREATE TABLE IF NOT EXISTS result_waits (
    id      INTEGER PRIMARY KEY,
    queue   TEXT NOT NULL,
    task_id TEXT NOT NULL
) STRICT;

-- name: create_result_waits_index
CREATE INDEX IF NOT EXISTS result_waits_task ON result_waits (queue, task_id);

-- name: add_wait
INSERT INTO result_waits (queue, task_id) VALUES (?, ?);

-- name: drop_wait
DELETE FROM result_waits WHERE id = ?;

-- name: is_waited
SELECT 1 FROM result_waits WHERE queue = ? AND task_id = ? LIMIT 1;
