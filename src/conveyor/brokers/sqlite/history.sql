-- Attempt history on the SQLite broker (see conveyor/brokers/history.py), loaded by history.py
-- like queries.sql: a "-- name: <name>" line, comment lines, then the statement.
-- Positional parameters are listed in each comment in order.

-- name: create_history
-- The table and its two triggers. Every failed attempt (retry, archive, recovery, a workflow
-- step's failure) adds one to the task's retried column in the statement that moves it, so a
-- trigger on that column records the attempt in the same transaction, whichever statement it
-- was: its number (retried after it), when (last_failed_at, broker clock) and the error cut to
-- 512 characters (HISTORY_ERROR_CHARS), dropping records older than the last 20 (HISTORY_KEPT).
-- The second trigger deletes a task's history with its row, whatever deletes it; a task that
-- never failed (retried = 0) has none, so its deletion (a completion) runs nothing more.
-- Idempotent; run on every connection open, outside the versioned schema.sql.
CREATE TABLE IF NOT EXISTS task_attempts (
    queue     TEXT    NOT NULL,
    id        TEXT    NOT NULL,
    attempt   INTEGER NOT NULL,
    failed_at REAL    NOT NULL,
    error     TEXT    NOT NULL,
    PRIMARY KEY (queue, id, attempt)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS task_attempts_record AFTER UPDATE OF retried ON tasks
WHEN new.retried > old.retried
BEGIN
    INSERT OR REPLACE INTO task_attempts (queue, id, attempt, failed_at, error)
    VALUES (new.queue, new.id, new.retried, coalesce(new.last_failed_at, 0.0),
            substr(coalesce(new.last_error, ''), 1, 512));
    DELETE FROM task_attempts
    WHERE queue = new.queue AND id = new.id AND attempt <= new.retried - 20;
END;
CREATE TRIGGER IF NOT EXISTS task_attempts_purge AFTER DELETE ON tasks
WHEN old.retried > 0
BEGIN
    DELETE FROM task_attempts WHERE queue = old.queue AND id = old.id;
END;

-- name: load_history
-- A task's failed attempts, oldest first.
-- Params: queue, id
SELECT attempt, failed_at, error FROM task_attempts WHERE queue = ? AND id = ? ORDER BY attempt;
