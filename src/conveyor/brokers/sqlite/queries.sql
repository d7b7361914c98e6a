-- Named queries of the SQLite broker, loaded by queries.py.
--
-- Each query starts with a "-- name: <name>" line, followed by comment lines describing it and
-- the statement itself. Parameters are positional (?), listed in the comment in order, because
-- executemany over tuples is the fastest way to feed SQLite from Python.
--
-- Every query returning whole tasks selects the "task columns" in this exact order, which
-- rows.py decodes (``headers`` is added by headers.sql when a connection opens):
--   seq, queue, id, type, state, payload, encoding, max_retry, retried, token, timeout_s,
--   deadline, retention_s, unique_key, enqueued_at, ready_at, since, lease_expires_at,
--   last_error, last_failed_at, completed_at, result, headers
--
-- The terms "state <> 'scheduled' AND state <> 'retry' AND state <> 'active' AND
-- state <> 'archived' AND state <> 'completed'" and "state IN ('scheduled', 'retry')" are
-- repeated word for word: they are the conditions of the partial indexes tasks_pending and
-- tasks_due, which SQLite uses only for identical terms.

-- name: insert_task
-- Store one new task (run with executemany over a batch).
-- Params: queue, id, type, state, payload, encoding, max_retry, timeout_s, deadline,
--         retention_s, unique_key, enqueued_at, ready_at, since
INSERT INTO tasks (queue, id, type, state, payload, encoding, max_retry, timeout_s, deadline,
                   retention_s, unique_key, enqueued_at, ready_at, since)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: insert_leased_task
-- Store one new task already ACTIVE under a lease, as a claim would leave it (a chain's next
-- step leased in its parent's settlement).
-- Params: queue, id, type, payload, encoding, max_retry, timeout_s, deadline, retention_s,
--         unique_key, enqueued_at, ready_at, since, token, lease_expires_at
INSERT INTO tasks (queue, id, type, state, payload, encoding, max_retry, timeout_s, deadline,
                   retention_s, unique_key, enqueued_at, ready_at, since, token,
                   lease_expires_at)
VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: take_unique_lock
-- Take a unique key, or take over an expired one; returns no row when a live lock holds it.
-- Params: queue, key, task_id, expires_at, now
INSERT INTO unique_locks (queue, key, task_id, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (queue, key) DO UPDATE
    SET task_id = excluded.task_id, expires_at = excluded.expires_at
    WHERE unique_locks.expires_at IS NOT NULL AND unique_locks.expires_at <= ?5
RETURNING task_id;

-- name: add_queue
-- Remember a queue name for list_queues.
-- Params: name
INSERT INTO queues (name) VALUES (?) ON CONFLICT (name) DO NOTHING;

-- name: task_exists
-- Whether any task (in any state) has this id in the queue.
-- Params: queue, id
SELECT 1 FROM tasks WHERE queue = ? AND id = ?;

-- name: unique_lock_held
-- The id of the task holding a live lock on the key, as stored bytes (no row: the key is free;
-- bytes, so an id that is not UTF-8 cannot fail the fetch).
-- Params: queue, key, now
SELECT CAST(task_id AS BLOB) FROM unique_locks
WHERE queue = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?);

-- name: paused_queues
-- Names of the paused queues (a small table).
SELECT name FROM queues WHERE paused = 1;

-- name: claim_pending
-- The oldest PENDING tasks of one queue (and rows in unknown states, which claim archives):
-- an index range scan on tasks_pending, whatever the clock says.
-- Params: queue, limit
SELECT seq, queue, id, type, state, payload, encoding, max_retry, retried, token, timeout_s,
       deadline, retention_s, unique_key, enqueued_at, ready_at, since, lease_expires_at,
       last_error, last_failed_at, completed_at, result, headers
FROM tasks INDEXED BY tasks_pending
WHERE queue = ? AND state <> 'scheduled' AND state <> 'retry' AND state <> 'active'
  AND state <> 'archived' AND state <> 'completed'
ORDER BY ready_at, seq
LIMIT ?;

-- name: claim_due
-- The SCHEDULED and RETRY tasks of one queue that are due, oldest ready time first: an index
-- range scan on tasks_due that stops at the first task not yet due.
-- Params: queue, now, limit
SELECT seq, queue, id, type, state, payload, encoding, max_retry, retried, token, timeout_s,
       deadline, retention_s, unique_key, enqueued_at, ready_at, since, lease_expires_at,
       last_error, last_failed_at, completed_at, result, headers
FROM tasks INDEXED BY tasks_due
WHERE queue = ? AND state IN ('scheduled', 'retry') AND ready_at <= ?
ORDER BY ready_at, seq
LIMIT ?;

-- name: mint_tokens
-- Reserve n fencing tokens; returns the last one (the batch is last - n + 1 .. last).
-- Params: n
UPDATE counters SET value = value + ? WHERE name = 'token' RETURNING value;

-- name: claim_task
-- Make a claimed task ACTIVE with a lease and its fencing token (ready_at is kept).
-- Params: token, lease_expires_at, now, seq
UPDATE tasks
SET state = 'active', token = ?, lease_expires_at = ?, since = ?
WHERE seq = ?;

-- name: claim_pending_by_id
-- Make one PENDING task, named by queue and id, ACTIVE with a lease and its fencing token.
-- Params: token, lease_expires_at, now, queue, id
UPDATE tasks
SET state = 'active', token = ?, lease_expires_at = ?, since = ?
WHERE queue = ? AND id = ? AND state = 'pending';

-- name: archive_undecodable
-- Archive a stored task that cannot be decoded, with the reason. An unknown encoding becomes
-- 'bytes' so the archived row can be listed and inspected; the raw payload is kept untouched.
-- Params: reason, now, seq
UPDATE tasks
SET state = 'archived',
    encoding = CASE WHEN encoding IN ('json', 'bytes') THEN encoding ELSE 'bytes' END,
    last_error = ?1, last_failed_at = ?2, since = ?2, lease_expires_at = NULL
WHERE seq = ?3;

-- name: has_pending
-- Whether a queue has a PENDING task (or a row in an unknown state for claim to archive).
-- Params: queue
SELECT 1 FROM tasks INDEXED BY tasks_pending
WHERE queue = ? AND state <> 'scheduled' AND state <> 'retry' AND state <> 'active'
  AND state <> 'archived' AND state <> 'completed'
LIMIT 1;

-- name: next_due_at
-- The earliest due time among a queue's SCHEDULED and RETRY tasks (NULL when none wait).
-- Params: queue
SELECT min(ready_at) FROM tasks INDEXED BY tasks_due
WHERE queue = ? AND state IN ('scheduled', 'retry');

-- name: extend_lease
-- Push a held lease's expiry (compare-and-set on the fencing token).
-- Params: lease_expires_at, queue, id, token
UPDATE tasks SET lease_expires_at = ?
WHERE queue = ? AND id = ? AND state = 'active' AND token = ?;

-- name: find_leased
-- The task behind a lease, if the lease is still the current claim: its seq, whether it has a
-- unique key, its retention (no TEXT is read, so a damaged one cannot fail the completion).
-- Params: queue, id, token
SELECT seq, unique_key IS NOT NULL, retention_s FROM tasks
WHERE queue = ? AND id = ? AND state = 'active' AND token = ?;

-- name: complete_retained
-- Keep a completed task with its result until its retention passes.
-- Params: result, now, seq
UPDATE tasks
SET state = 'completed', result = ?1, completed_at = ?2, since = ?2, lease_expires_at = NULL
WHERE seq = ?3;

-- name: delete_task
-- Delete one task.
-- Params: seq
DELETE FROM tasks WHERE seq = ?;

-- name: release_task_lock
-- Release a task's unique lock, only if that task still holds it. The task is named by seq, so
-- its text never passes through Python (where a value that is not UTF-8 could not be read).
-- Params: seq
DELETE FROM unique_locks
WHERE (queue, key, task_id) = (SELECT queue, unique_key, id FROM tasks WHERE seq = ?);

-- name: count_outcomes
-- Add to a queue's processed/failed totals for a UTC day.
-- Params: queue, day, processed, failed
INSERT INTO daily_counts (queue, day, processed, failed) VALUES (?, ?, ?, ?)
ON CONFLICT (queue, day) DO UPDATE
    SET processed = processed + excluded.processed, failed = failed + excluded.failed;

-- name: retry_leased
-- Record a failed attempt: RETRY, due at ready_at (compare-and-set on the fencing token).
-- Params: ready_at, error, now, queue, id, token
UPDATE tasks
SET state = 'retry', ready_at = ?1, retried = retried + 1, last_error = ?2,
    last_failed_at = ?3, since = ?3, lease_expires_at = NULL
WHERE queue = ?4 AND id = ?5 AND state = 'active' AND token = ?6;

-- name: archive_leased
-- Record a failed attempt and archive the task (compare-and-set on the fencing token).
-- Params: error, now, queue, id, token
UPDATE tasks
SET state = 'archived', retried = retried + 1, last_error = ?1, last_failed_at = ?2,
    since = ?2, lease_expires_at = NULL
WHERE queue = ?3 AND id = ?4 AND state = 'active' AND token = ?5;

-- name: release_leased
-- Give a task back: PENDING with its original ready time, so it goes to the front.
-- Params: now, queue, id, token
UPDATE tasks SET state = 'pending', since = ?, lease_expires_at = NULL
WHERE queue = ? AND id = ? AND state = 'active' AND token = ?;

-- name: recover_expired
-- Fail every ACTIVE task whose lease lapsed: RETRY due at now + delay x recover_spread(id,
-- crash number) (a Python function the connection registers; it takes the id as stored bytes,
-- which need not be UTF-8), or ARCHIVED when it has no retries left or lost its max_crashes-th
-- lease (then with the crash-limit error). Every
-- right-hand side reads the row as it was. Returns the queue of each recovered task (for the
-- failure counters).
-- Params: error, now, delay_s, max_crashes, crash-limit error
UPDATE tasks
SET state = CASE WHEN crashes + 1 >= ?4 OR retried + 1 > max_retry THEN 'archived'
                 ELSE 'retry' END,
    ready_at = CASE WHEN crashes + 1 >= ?4 OR retried + 1 > max_retry THEN ready_at
                    ELSE ?2 + ?3 * recover_spread(CAST(id AS BLOB), crashes + 1) END,
    last_error = CASE WHEN crashes + 1 >= ?4 THEN ?5 ELSE ?1 END,
    crashes = crashes + 1, retried = retried + 1, last_failed_at = ?2, since = ?2,
    lease_expires_at = NULL
-- An ACTIVE row without an expiry is damaged (no claim writes one): recover it too, or it would be
-- stuck for ever.
WHERE state = 'active' AND (lease_expires_at IS NULL OR lease_expires_at < ?2)
RETURNING queue;

-- name: purge_completed
-- Delete COMPLETED tasks whose retention has passed.
-- Params: now
DELETE FROM tasks WHERE state = 'completed' AND completed_at + retention_s <= ?;

-- name: purge_daily_counts
-- Drop the processed/failed totals of days before the oldest one kept.
-- Params: oldest day kept (YYYY-MM-DD)
DELETE FROM daily_counts WHERE day < ?;

-- name: purge_unique_locks
-- Delete unique locks whose TTL has passed.
-- Params: now
DELETE FROM unique_locks WHERE expires_at IS NOT NULL AND expires_at <= ?;

-- name: list_queues
-- Every queue ever enqueued to or paused.
SELECT name FROM queues ORDER BY name;

-- name: count_by_state
-- How many tasks a queue holds in each state.
-- Params: queue
SELECT state, count(*) FROM tasks WHERE queue = ? GROUP BY state;

-- name: queue_paused
-- A queue's pause flag (no row: never paused).
-- Params: queue
SELECT paused FROM queues WHERE name = ?;

-- name: day_counts
-- A queue's processed/failed totals for a UTC day.
-- Params: queue, day
SELECT processed, failed FROM daily_counts WHERE queue = ? AND day = ?;

-- name: list_waiting
-- A page of waiting tasks in one state, in the order they will be claimed.
-- Params: queue, state, limit, offset
SELECT seq, queue, id, type, state, payload, encoding, max_retry, retried, token, timeout_s,
       deadline, retention_s, unique_key, enqueued_at, ready_at, since, lease_expires_at,
       last_error, last_failed_at, completed_at, result, headers
FROM tasks WHERE queue = ? AND state = ?
ORDER BY ready_at, seq
LIMIT ? OFFSET ?;

-- name: list_settled
-- A page of ACTIVE, ARCHIVED or COMPLETED tasks, by when they entered the state.
-- Params: queue, state, limit, offset
SELECT seq, queue, id, type, state, payload, encoding, max_retry, retried, token, timeout_s,
       deadline, retention_s, unique_key, enqueued_at, ready_at, since, lease_expires_at,
       last_error, last_failed_at, completed_at, result, headers
FROM tasks WHERE queue = ? AND state = ?
ORDER BY since, seq
LIMIT ? OFFSET ?;

-- name: get_task
-- One task by id.
-- Params: queue, id
SELECT seq, queue, id, type, state, payload, encoding, max_retry, retried, token, timeout_s,
       deadline, retention_s, unique_key, enqueued_at, ready_at, since, lease_expires_at,
       last_error, last_failed_at, completed_at, result, headers
FROM tasks WHERE queue = ? AND id = ?;

-- name: make_pending
-- Inspector "run": a task becomes PENDING, ready now.
-- Params: now, seq
UPDATE tasks SET state = 'pending', ready_at = ?1, since = ?1 WHERE seq = ?2;

-- name: make_archived
-- Inspector "archive": a waiting task becomes ARCHIVED (not a failed attempt).
-- Params: now, seq
UPDATE tasks SET state = 'archived', since = ? WHERE seq = ?;

-- name: release_locks_in_state
-- Release the unique locks held by every task of a queue in one state (before deleting them).
-- Params: queue, state
DELETE FROM unique_locks
WHERE queue = ?1 AND EXISTS (
    SELECT 1 FROM tasks
    WHERE tasks.queue = ?1 AND tasks.state = ?2
      AND tasks.id = unique_locks.task_id AND tasks.unique_key = unique_locks.key
);

-- name: delete_in_state
-- Delete every task of a queue in one state.
-- Params: queue, state
DELETE FROM tasks WHERE queue = ? AND state = ?;

-- name: make_pending_in_state
-- Inspector bulk "run": every task of a queue in one state becomes PENDING, ready now.
-- Params: now, queue, state
UPDATE tasks SET state = 'pending', ready_at = ?1, since = ?1 WHERE queue = ?2 AND state = ?3;

-- name: make_archived_in_state
-- Inspector bulk "archive": every task of a queue in one state becomes ARCHIVED.
-- Params: now, queue, state
UPDATE tasks SET state = 'archived', since = ? WHERE queue = ? AND state = ?;

-- name: set_paused
-- Set a queue's pause flag, remembering the queue.
-- Params: name, paused
INSERT INTO queues (name, paused) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused;

-- name: delete_queue_tasks
-- Inspector "delete queue": every task of a queue, in any state.
-- Params: queue
DELETE FROM tasks WHERE queue = ?;

-- name: delete_queue_locks
-- Inspector "delete queue": every unique lock of a queue (live or expired).
-- Params: queue
DELETE FROM unique_locks WHERE queue = ?;

-- name: delete_queue_counts
-- Inspector "delete queue": every daily processed/failed total of a queue.
-- Params: queue
DELETE FROM daily_counts WHERE queue = ?;

-- name: delete_queue_entry
-- Inspector "delete queue": the queue's name and pause flag.
-- Params: name
DELETE FROM queues WHERE name = ?;
