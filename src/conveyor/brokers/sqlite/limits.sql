-- Flow control (limits.py): queue length limits and rate limits, as named queries.
-- The tables are created, if missing, each time a connection opens (create_tables), so a file
-- made by any version of conveyor gains them without a schema version change.

-- name: create_tables
-- One row per limited queue; one per rate-limited task type; one per token of a rate limit's
-- bucket still out (when it was taken, by the broker clock; it is back period_s later); a claim
-- writes one row for the tokens it takes of a type, with their number (files made before have
-- one row per token: add_token_counts gives them the column, n = 1).
CREATE TABLE IF NOT EXISTS queue_limits (
    queue TEXT PRIMARY KEY,
    max_length INTEGER NOT NULL,
    overflow TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rate_limits (
    type TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    period_s REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rate_tokens (
    type TEXT NOT NULL,
    taken_at REAL NOT NULL,
    n INTEGER NOT NULL DEFAULT 1  -- the tokens one claim took at taken_at
);
CREATE INDEX IF NOT EXISTS rate_tokens_by_type ON rate_tokens (type, taken_at);
CREATE TABLE IF NOT EXISTS concurrency_limits (
    kind TEXT NOT NULL,  -- 'type' or 'queue'
    name TEXT NOT NULL,
    max_active INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
-- Tasks held back, SCHEDULED, because their type was at its concurrency limit: the first claim
-- to find a slot free moves them back to pending at their old ready time. A row whose task has
-- changed state since (run, deleted, archived by the inspector) is just dropped.
CREATE TABLE IF NOT EXISTS held_tasks (
    seq INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    ready_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS held_tasks_in_order ON held_tasks (queue, type, ready_at, seq);
-- How many tokens of a type's bucket are out (rows of rate_tokens), kept by the claims that take
-- and drop them, so a claim reads one row instead of counting the tokens. A type with tokens and
-- no row here (a file from an earlier version) is counted once, then kept.
CREATE TABLE IF NOT EXISTS rate_out (
    type TEXT PRIMARY KEY,
    out INTEGER NOT NULL
) WITHOUT ROWID;

-- name: set_queue_limit
-- Params: queue, max_length, overflow
INSERT INTO queue_limits (queue, max_length, overflow) VALUES (?1, ?2, ?3)
ON CONFLICT (queue) DO UPDATE SET max_length = ?2, overflow = ?3;

-- name: remove_queue_limit
-- Params: queue
DELETE FROM queue_limits WHERE queue = ?;

-- name: queue_limit
-- Params: queue
SELECT max_length, overflow FROM queue_limits WHERE queue = ?;

-- name: all_queue_limits
-- Every queue limit: a handful of rows, read once per enqueue transaction.
SELECT queue, max_length, overflow FROM queue_limits;

-- name: count_waiting
-- The tasks a queue limit counts: PENDING, SCHEDULED and RETRY.
-- Params: queue
SELECT
    (SELECT count(*) FROM tasks INDEXED BY tasks_pending
     WHERE queue = ?1 AND state <> 'scheduled' AND state <> 'retry' AND state <> 'active'
       AND state <> 'archived' AND state <> 'completed')
  + (SELECT count(*) FROM tasks INDEXED BY tasks_due
     WHERE queue = ?1 AND state IN ('scheduled', 'retry'));

-- name: oldest_pending
-- The pending tasks claimed first, the candidates to drop; the caller skips the batch's own.
-- Params: queue, limit
SELECT seq, id FROM tasks INDEXED BY tasks_pending
WHERE queue = ? AND state <> 'scheduled' AND state <> 'retry' AND state <> 'active'
  AND state <> 'archived' AND state <> 'completed'
ORDER BY ready_at, seq
LIMIT ?;

-- name: drop_task
-- Archive a pending task to make room (not a failed attempt: retried and the totals stay).
-- Params: error, now, seq
UPDATE tasks SET state = 'archived', last_error = ?1, since = ?2 WHERE seq = ?3;

-- name: set_rate_limit
-- A changed rate keeps its tokens out.
-- Params: type, count, period_s
INSERT INTO rate_limits (type, count, period_s) VALUES (?1, ?2, ?3)
ON CONFLICT (type) DO UPDATE SET count = ?2, period_s = ?3;

-- name: remove_rate_limit
-- Params: type
DELETE FROM rate_limits WHERE type = ?;

-- name: remove_rate_tokens
-- Params: type
DELETE FROM rate_tokens WHERE type = ?;

-- name: remove_rate_out
-- Params: type
DELETE FROM rate_out WHERE type = ?;

-- name: save_rate_out
-- Params: type, out
INSERT INTO rate_out (type, out) VALUES (?1, ?2) ON CONFLICT (type) DO UPDATE SET out = ?2;

-- name: all_rate_limits
-- Every rate limit: a handful of rows, read once per claim transaction.
SELECT type, count, period_s FROM rate_limits;

-- name: count_tokens_out
-- How many tokens of a type's bucket are out (taken less than a period ago).
-- Params: type, back_before
SELECT coalesce(sum(n), 0) FROM rate_tokens WHERE type = ? AND taken_at > ?;

-- name: token_out
-- When the token out at a position (0 the oldest) was taken: the one a held-back task waits
-- for.
-- Params: type, back_before, position
SELECT taken_at FROM (
    SELECT taken_at, sum(n) OVER (ORDER BY taken_at, rowid) AS upto
    FROM rate_tokens WHERE type = ?1 AND taken_at > ?2
)
WHERE upto > ?3 ORDER BY upto LIMIT 1;

-- name: drop_tokens_back
-- The tokens back: deleted, their numbers returned.
-- Params: type, back_before
DELETE FROM rate_tokens WHERE type = ? AND taken_at <= ? RETURNING n;

-- name: take_tokens
-- Params: type, taken_at, n
INSERT INTO rate_tokens (type, taken_at, n) VALUES (?, ?, ?);

-- name: add_token_counts
ALTER TABLE rate_tokens ADD COLUMN n INTEGER NOT NULL DEFAULT 1;

-- name: hold_task
-- A claimed-for task over its type's rate: SCHEDULED until its token, nothing counted.
-- Params: ready_at, now, seq
UPDATE tasks SET state = 'scheduled', ready_at = ?, since = ? WHERE seq = ?;

-- name: set_concurrency
-- Params: kind ('type' or 'queue'), name, max_active
INSERT INTO concurrency_limits (kind, name, max_active) VALUES (?1, ?2, ?3)
ON CONFLICT (kind, name) DO UPDATE SET max_active = ?3;

-- name: remove_concurrency
-- Params: kind, name
DELETE FROM concurrency_limits WHERE kind = ? AND name = ?;

-- name: all_concurrency
-- Every concurrency limit: a handful of rows, read once per claim transaction.
SELECT kind, name, max_active FROM concurrency_limits;

-- name: active_of_type
-- The count a type's concurrency limit compares with: its ACTIVE tasks, in every queue.
-- Params: type
SELECT count(*) FROM tasks INDEXED BY tasks_leases WHERE state = 'active' AND type = ?;

-- name: active_in_queue
-- Params: queue
SELECT count(*) FROM tasks WHERE queue = ? AND state = 'active';

-- name: full_queues
-- The queues at their concurrency limit (an idle wait does not wake for them).
SELECT name FROM concurrency_limits AS c
WHERE kind = 'queue'
  AND max_active <= (SELECT count(*) FROM tasks WHERE queue = c.name AND state = 'active');

-- name: hold_for_slot
-- Params: seq, queue, id, type, ready_at (the task's ready time before it was held)
INSERT OR REPLACE INTO held_tasks (seq, queue, id, type, ready_at) VALUES (?, ?, ?, ?, ?);

-- name: held_in_order
-- Params: queue, type, limit
SELECT seq, id, ready_at FROM held_tasks WHERE queue = ? AND type = ?
ORDER BY ready_at, seq LIMIT ?;

-- name: unhold_task
-- Back to pending at its old ready time, if it is still the held task.
-- Params: seq, ready_at, now, id
UPDATE tasks SET state = 'pending', ready_at = ?2, since = ?3
WHERE seq = ?1 AND id = ?4 AND state = 'scheduled';

-- name: forget_held
-- Params: seq
DELETE FROM held_tasks WHERE seq = ?;

-- name: any_held
SELECT 1 FROM held_tasks LIMIT 1;

-- name: slots_watched
-- After tasks left ACTIVE: 1 when a task is held for a slot, or one of the queues is one task
-- short of its concurrency limit (it was at it), else 0, in one statement.
-- Params: the queues, as a JSON array
SELECT EXISTS (SELECT 1 FROM held_tasks)
    OR EXISTS (
        SELECT 1 FROM concurrency_limits AS c
        WHERE c.kind = 'queue' AND c.name IN (SELECT value FROM json_each(?1))
          AND c.max_active - 1 = (
              SELECT count(*) FROM tasks WHERE queue = c.name AND state = 'active'
          )
    );

-- name: slot_free
-- A type with tasks of the queue held for a slot, and fewer ACTIVE tasks than its limit.
-- Params: queue
SELECT 1 FROM concurrency_limits AS c
WHERE c.kind = 'type'
  AND EXISTS (SELECT 1 FROM held_tasks AS h WHERE h.queue = ?1 AND h.type = c.name)
  AND c.max_active > (
      SELECT count(*) FROM tasks INDEXED BY tasks_leases WHERE state = 'active' AND type = c.name
  )
LIMIT 1;

-- name: forget_held_of_type
-- Params: type
DELETE FROM held_tasks WHERE type = ?;

-- name: all_claim_limits
-- Every rate and concurrency limit, read once per claim transaction: (kind, name, count or
-- max_active, period_s or NULL, the rate's tokens out or NULL when not kept yet), kind 'rate',
-- 'type' or 'queue'.
SELECT 'rate', r.type, r.count, r.period_s, o.out
FROM rate_limits AS r LEFT JOIN rate_out AS o ON o.type = r.type
UNION ALL
SELECT kind, name, max_active, NULL, NULL FROM concurrency_limits;

-- name: any_concurrency
SELECT 1 FROM concurrency_limits LIMIT 1;
