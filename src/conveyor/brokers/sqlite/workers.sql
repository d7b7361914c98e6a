-- workers.sql: the worker registry and cancel requests of the SQLite broker.
-- Tables are created when a connection opens (IF NOT EXISTS, so every open is idempotent and
-- an older file gains them without a schema version bump); the named queries follow.

-- name: create_workers
-- One row per live worker: its JSON record, when it last beat and when the record lapses.
CREATE TABLE IF NOT EXISTS workers (
    id         TEXT PRIMARY KEY,
    record     TEXT NOT NULL,
    beat_at    REAL NOT NULL,
    expires_at REAL NOT NULL
) STRICT, WITHOUT ROWID;

-- name: create_cancel_requests
-- A cancel request names the attempt (token) it cancels, so a later attempt is never cancelled.
CREATE TABLE IF NOT EXISTS cancel_requests (
    queue   TEXT    NOT NULL,
    task_id TEXT    NOT NULL,
    token   INTEGER NOT NULL,
    PRIMARY KEY (queue, task_id)
) STRICT, WITHOUT ROWID;

-- name: upsert_worker
INSERT INTO workers (id, record, beat_at, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET record = excluded.record, beat_at = excluded.beat_at,
    expires_at = excluded.expires_at;

-- name: delete_worker
DELETE FROM workers WHERE id = ?;

-- name: delete_lapsed_workers
DELETE FROM workers WHERE expires_at <= ?;

-- name: live_workers
SELECT record, beat_at FROM workers WHERE expires_at > ? ORDER BY id;

-- name: task_state_token
SELECT state, token FROM tasks WHERE queue = ? AND id = ?;

-- name: delete_ended_cancels
-- Requests of attempts that have ended (the task moved on, or was deleted) can never match.
DELETE FROM cancel_requests WHERE queue = ? AND NOT EXISTS (
    SELECT 1 FROM tasks t WHERE t.queue = cancel_requests.queue
    AND t.id = cancel_requests.task_id AND t.state = 'active'
    AND t.token = cancel_requests.token);

-- name: upsert_cancel
INSERT INTO cancel_requests (queue, task_id, token) VALUES (?, ?, ?)
ON CONFLICT (queue, task_id) DO UPDATE SET token = excluded.token;

-- name: cancel_token
SELECT token FROM cancel_requests WHERE queue = ? AND task_id = ?;

-- name: delete_queue_cancels
DELETE FROM cancel_requests WHERE queue = ?;
