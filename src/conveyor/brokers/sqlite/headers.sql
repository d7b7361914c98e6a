-- headers.sql: task headers in the SQLite broker (conveyor.headers).
-- The tasks table gains a nullable BLOB column, added when a connection opens (an older file
-- gains it without a schema version bump). A task without headers leaves it NULL: nothing is
-- written for it, and the insert of tasks is unchanged.

-- name: add_headers_column
ALTER TABLE tasks ADD COLUMN headers BLOB;

-- name: set_headers
-- Store one new task's headers, in the transaction that inserted it.
-- Params: headers, queue, id
UPDATE tasks SET headers = ? WHERE queue = ? AND id = ?;
