-- Workflows on SQLite: the tables (applied idempotently when a connection opens) and the named
-- queries of brokers/sqlite/workflows.py. The graph is JSON (a BLOB of UTF-8) in a table of its
-- own: it never changes, and SQLite rewrites a whole row (overflow pages included) on any
-- UPDATE, so the workflow's row, rewritten at every step, stays small. A workflow's steps are
-- rows of their own, so a step's change rewrites one small row, not the workflow.

-- name: schema
CREATE TABLE IF NOT EXISTS workflows (
    id          TEXT    PRIMARY KEY,
    state       TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    finished_at REAL,
    error       TEXT,
    failed_task TEXT,
    retention_s REAL    NOT NULL,
    version     INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX IF NOT EXISTS workflows_by_state ON workflows (state, created_at);
CREATE INDEX IF NOT EXISTS workflows_by_created ON workflows (created_at);
CREATE TABLE IF NOT EXISTS workflow_steps (
    workflow_id TEXT    NOT NULL,
    idx         INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    result      BLOB,
    error       TEXT,
    PRIMARY KEY (workflow_id, idx)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workflow_graphs (
    id    TEXT PRIMARY KEY,
    graph BLOB NOT NULL
) STRICT;

-- name: insert_workflow
-- Params: id, state, created_at, retention_s
INSERT INTO workflows (id, state, created_at, retention_s) VALUES (?, ?, ?, ?);

-- name: insert_graph
-- Params: id, graph
INSERT OR REPLACE INTO workflow_graphs (id, graph) VALUES (?, ?);

-- name: insert_step
-- Params: workflow id, index, state
INSERT INTO workflow_steps (workflow_id, idx, state) VALUES (?, ?, ?);

-- name: get_workflow
-- Params: id
SELECT w.id, w.state, g.graph, w.created_at, w.finished_at, w.error, w.failed_task,
       w.retention_s, w.version
FROM workflows AS w JOIN workflow_graphs AS g ON g.id = w.id WHERE w.id = ?;

-- name: get_state
-- Params: id
SELECT state FROM workflows WHERE id = ?;

-- name: get_graph
-- Params: id
SELECT graph FROM workflow_graphs WHERE id = ?;

-- name: get_states
-- Params: workflow id
SELECT state FROM workflow_steps WHERE workflow_id = ? ORDER BY idx;

-- name: get_some_steps
-- Params: workflow id, JSON array of step indices
SELECT idx, state, result, error FROM workflow_steps
WHERE workflow_id = ?1 AND idx IN (SELECT value FROM json_each(?2));

-- name: get_one_step
-- Params: workflow id, step index
SELECT idx, state, result, error FROM workflow_steps WHERE workflow_id = ?1 AND idx = ?2;

-- name: get_steps
-- Params: workflow id
SELECT state, result, error FROM workflow_steps WHERE workflow_id = ? ORDER BY idx;

-- name: list_all
-- Params: limit, offset
SELECT id FROM workflows ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?;

-- name: list_in_state
-- Params: state, limit, offset
SELECT id FROM workflows WHERE state = ? ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?;

-- name: update_workflow
-- Params: state, error, failed_task, finished_at, version, id
UPDATE workflows SET state = ?, error = ?, failed_task = ?, finished_at = ?, version = ?
WHERE id = ?;

-- name: update_step
-- Params: state, result, error, workflow id, index
UPDATE workflow_steps SET state = ?, result = ?, error = ? WHERE workflow_id = ? AND idx = ?;

-- name: expired_workflows
-- Finished workflows past their retention.
-- Params: now
SELECT id FROM workflows WHERE finished_at IS NOT NULL AND finished_at + retention_s <= ?;

-- name: delete_workflow
-- Params: id
DELETE FROM workflows WHERE id = ?;

-- name: delete_graph
-- Params: id
DELETE FROM workflow_graphs WHERE id = ?;

-- name: delete_steps
-- Params: workflow id
DELETE FROM workflow_steps WHERE workflow_id = ?;

-- name: archived_steps
-- Workflow steps archived in this transaction (recovery): the tasks it just moved.
-- Params: now
SELECT id, last_error FROM tasks
WHERE state = 'archived' AND since = ? AND last_failed_at = ? AND id LIKE 'wf.%';

-- name: last_error
-- Params: queue, id
SELECT last_error FROM tasks WHERE queue = ? AND id = ?;

-- name: get_head
-- A workflow's state, and what tells its graph apart from a purged one's of the same id.
-- Params: id
SELECT state, created_at FROM workflows WHERE id = ?;

-- name: get_step_state
-- Params: workflow id, index
SELECT state FROM workflow_steps WHERE workflow_id = ? AND idx = ?;

-- name: unsucceeded_in_range
-- Whether any step of indices first..last has not succeeded (a dependent's inputs). Scanned
-- from the last: steps are claimed in index order, so those still running are the last ones
-- and a chord member's check stops at once (from the first it would pass every member done).
-- Params: workflow id, first, last
SELECT 1 FROM workflow_steps
WHERE workflow_id = ?1 AND idx BETWEEN ?2 AND ?3 AND state != 'succeeded'
ORDER BY idx DESC LIMIT 1;

-- name: unsucceeded_main
-- Whether any step other than the error callbacks (a JSON array of indices) has not succeeded.
-- Params: workflow id, JSON array of the error callbacks' indices
SELECT 1 FROM workflow_steps
WHERE workflow_id = ?1 AND state != 'succeeded'
  AND idx NOT IN (SELECT value FROM json_each(?2)) LIMIT 1;

-- name: set_step_state
-- Params: state, workflow id, index
UPDATE workflow_steps SET state = ? WHERE workflow_id = ? AND idx = ?;

-- name: advance_workflow
-- The row after a number of changes made by its steps' common successes.
-- Params: id, state, finished_at (NULL: unchanged), how many changes
UPDATE workflows SET state = ?2, version = version + ?4, finished_at = COALESCE(?3, finished_at)
WHERE id = ?1;

-- name: count_changes
-- A number of changes that left the workflow's state as it was: the state is not assigned, so
-- its index entry (workflows_by_state) is not rewritten.
-- Params: id, how many changes
UPDATE workflows SET version = version + ?2 WHERE id = ?1;

-- name: succeed_enqueued_step
-- A step's success over its ENQUEUED record (no row changed: it is not ENQUEUED).
-- Params: result, workflow id, index
UPDATE workflow_steps SET state = 'succeeded', result = ?1, error = NULL
WHERE workflow_id = ?2 AND idx = ?3 AND state = 'enqueued';

-- name: get_workflow_bare
-- get_workflow without the graph (the caller holds it).
-- Params: id
SELECT id, state, NULL, created_at, finished_at, error, failed_task, retention_s, version
FROM workflows WHERE id = ?;

-- name: claim_limits
-- What an eager continuation checks, in one read: every rate limit ('rate', type), every
-- concurrency limit ('type' or 'queue', name), and ('paused', queue) when that queue is paused.
-- Params: queue
SELECT 'rate', type FROM rate_limits
UNION ALL
SELECT kind, name FROM concurrency_limits
UNION ALL
SELECT 'paused', name FROM queues WHERE name = ?1 AND paused;

-- name: enqueue_if_ready
-- Mark a WAITING step ENQUEUED when every step of indices first..last (its inputs) has
-- succeeded: one statement for a dependent whose inputs are one range (a chain's next step, a
-- chord's body). The inputs are checked from the last, as in unsucceeded_in_range.
-- Params: workflow id, index, first, last
UPDATE workflow_steps SET state = 'enqueued'
WHERE workflow_id = ?1 AND idx = ?2 AND state = 'waiting'
  AND (SELECT idx FROM workflow_steps
       WHERE workflow_id = ?1 AND idx BETWEEN ?3 AND ?4 AND state != 'succeeded'
       ORDER BY idx DESC LIMIT 1) IS NULL;
