-- Per-minute processed/failed totals (see brokers/throughput.py). Kept out of schema.sql: the
-- table is created, if missing, whenever a connection opens, so no schema version is needed.

-- name: create_minute_counts
-- A queue's finished and failed attempts per UTC minute (minutes since the epoch).
CREATE TABLE IF NOT EXISTS minute_counts (
    queue TEXT NOT NULL,
    minute INTEGER NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, minute)
) WITHOUT ROWID;

-- name: count_minute
-- Add to a queue's processed/failed totals for a minute.
-- Params: queue, minute, processed, failed
INSERT INTO minute_counts (queue, minute, processed, failed) VALUES (?, ?, ?, ?)
ON CONFLICT (queue, minute) DO UPDATE
    SET processed = processed + excluded.processed, failed = failed + excluded.failed;

-- name: read_minutes
-- A queue's totals from a minute on.
-- Params: queue, first minute
SELECT minute, processed, failed FROM minute_counts WHERE queue = ? AND minute >= ?;

-- name: purge_minutes
-- Drop the minutes before the oldest one kept.
-- Params: oldest minute kept
DELETE FROM minute_counts WHERE minute < ?;

-- name: delete_queue_minutes
-- Inspector "delete queue": every minute total of a queue.
-- Params: queue
DELETE FROM minute_counts WHERE queue = ?;
