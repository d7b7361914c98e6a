-- The conveyor SQLite schema, version 4 (kept in PRAGMA user_version).
--
-- Executed as one script when a database is opened with an older user_version (0: a new file).
-- Every statement is idempotent (IF NOT EXISTS), so processes opening a fresh file at the same
-- time are harmless, and running it on version 1 or 2 upgrades it. Columns added since version
-- 3 cannot be added idempotently in SQL: connection.py adds them, and sets user_version, in a
-- transaction of its own right after this script.
-- Tables are STRICT: a column can never hold a value of the wrong type, so the only corruption a
-- reader has to survive is an unknown *value* (a state or encoding written by something else).
-- Times are REAL seconds since the epoch, read from the broker clock once per transaction.

BEGIN IMMEDIATE;

CREATE TABLE IF NOT EXISTS tasks (
    -- Insertion order: the FIFO tie-breaker between tasks that became ready at the same time.
    seq              INTEGER PRIMARY KEY,
    queue            TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    type             TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    payload          BLOB    NOT NULL,
    encoding         TEXT    NOT NULL,
    max_retry        INTEGER NOT NULL,
    -- Failed attempts (retry, archive, recovery); claims and releases do not count.
    retried          INTEGER NOT NULL DEFAULT 0,
    -- Leases lost (recover_expired): a task is archived at the worker's max_crashes.
    crashes          INTEGER NOT NULL DEFAULT 0,
    -- The fencing token of the current (or last) lease, from the broker-wide token counter.
    token            INTEGER NOT NULL DEFAULT 0,
    timeout_s        REAL,
    deadline         REAL,
    retention_s      REAL    NOT NULL DEFAULT 0,
    unique_key       TEXT,
    enqueued_at      REAL    NOT NULL,
    -- When a waiting task is (or was) ready; kept while ACTIVE so a release goes to the front.
    ready_at         REAL    NOT NULL,
    -- When the task entered its current state: orders listings of settled tasks.
    since            REAL    NOT NULL,
    lease_expires_at REAL,
    last_error       TEXT,
    last_failed_at   REAL,
    completed_at     REAL,
    result           BLOB
) STRICT;

CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_id ON tasks (queue, id);

-- The claim indexes, by ready time. PENDING tasks are claimable whatever their ready time: it
-- only orders them, so a clock that steps back (or a producer whose clock runs ahead) can never
-- hold up immediate work. SCHEDULED and RETRY tasks are claimable once ready_at <= now.
-- tasks_pending's condition names the states it excludes, so a row with an unknown state lands
-- there and claim archives it. Queries repeat these WHERE terms word for word: SQLite uses a
-- partial index only for a query containing the identical term.
-- The condition is a chain of <> rather than NOT IN (...): SQLite evaluates it for every row
-- written, and a 5-value IN list costs it a temporary table each time (~3 us per inserted row,
-- a seventh of a bulk enqueue). Version 2 had the NOT IN form, hence the drop (a no-op on a new
-- file; the pair is idempotent as a whole).
DROP INDEX IF EXISTS tasks_pending;
CREATE INDEX tasks_pending ON tasks (queue, ready_at, seq)
    WHERE state <> 'scheduled' AND state <> 'retry' AND state <> 'active'
      AND state <> 'archived' AND state <> 'completed';
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (queue, ready_at, seq)
    WHERE state IN ('scheduled', 'retry');

-- Counts by state and listings of settled tasks (ordered by the time they entered the state).
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (queue, state, since, seq);

-- Lapsed leases for recover_expired.
CREATE INDEX IF NOT EXISTS tasks_leases ON tasks (lease_expires_at) WHERE state = 'active';

-- Retained results past their retention for purge_expired.
CREATE INDEX IF NOT EXISTS tasks_retained ON tasks (completed_at + retention_s)
    WHERE state = 'completed';

-- One row per live unique key; expires_at NULL means "until the task completes or is deleted".
CREATE TABLE IF NOT EXISTS unique_locks (
    queue      TEXT NOT NULL,
    key        TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    expires_at REAL,
    PRIMARY KEY (queue, key)
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS unique_locks_by_expiry ON unique_locks (expires_at)
    WHERE expires_at IS NOT NULL;

-- Every queue ever enqueued to or paused, with its pause flag.
CREATE TABLE IF NOT EXISTS queues (
    name   TEXT    PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

-- Processed/failed totals per queue and UTC day (YYYY-MM-DD of the broker clock).
CREATE TABLE IF NOT EXISTS daily_counts (
    queue     TEXT    NOT NULL,
    day       TEXT    NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, day)
) STRICT, WITHOUT ROWID;

-- Broker-wide counters. 'token' mints fencing tokens: one sequence for every claim of every
-- task, so a token never repeats even when a task is deleted and enqueued again under its id.
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO counters (name, value) VALUES ('token', 0) ON CONFLICT (name) DO NOTHING;

-- Version 1 had a single claim index; claims now use tasks_pending and tasks_due.
DROP INDEX IF EXISTS tasks_ready;

COMMIT;
