-- Schedule entries (see conveyor/brokers/schedules.py). Applied with CREATE ... IF NOT EXISTS
-- each time a connection opens, beside schema.sql, so a file of any version gains the table.
-- Times are REAL seconds since the epoch, compared exactly (the cursor's compare-and-set).

-- name: schema
CREATE TABLE IF NOT EXISTS schedules (
    name         TEXT PRIMARY KEY,
    task_type    TEXT NOT NULL,
    queue        TEXT NOT NULL,
    payload      BLOB NOT NULL,
    encoding     TEXT NOT NULL,
    options      TEXT NOT NULL,
    cron         TEXT,
    every_us     INTEGER,
    tz           TEXT NOT NULL,
    missed       TEXT NOT NULL,
    owner        TEXT,
    revision     TEXT NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0,
    next_fire_at REAL NOT NULL,
    last_fire_at REAL,
    last_task_id TEXT
);
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (paused, next_fire_at);

-- name: schedule_get
SELECT name, task_type, queue, payload, encoding, options, cron, every_us, tz, missed, owner,
       revision, paused, next_fire_at, last_fire_at, last_task_id
FROM schedules WHERE name = ?;

-- name: schedule_list
SELECT name, task_type, queue, payload, encoding, options, cron, every_us, tz, missed, owner,
       revision, paused, next_fire_at, last_fire_at, last_task_id
FROM schedules ORDER BY name;

-- name: schedule_due
-- Unpaused entries due by the given time, earliest first (the schedules_due index).
SELECT name, task_type, queue, payload, encoding, options, cron, every_us, tz, missed, owner,
       revision, paused, next_fire_at, last_fire_at, last_task_id
FROM schedules WHERE paused = 0 AND next_fire_at <= ? ORDER BY next_fire_at, name LIMIT ?;

-- name: schedule_next_after
-- The earliest cursor of the unpaused entries past the given time.
SELECT min(next_fire_at) FROM schedules WHERE paused = 0 AND next_fire_at > ?;

-- name: schedule_upsert
INSERT INTO schedules (name, task_type, queue, payload, encoding, options, cron, every_us, tz,
                       missed, owner, revision, paused, next_fire_at, last_fire_at, last_task_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
    task_type = excluded.task_type, queue = excluded.queue, payload = excluded.payload,
    encoding = excluded.encoding, options = excluded.options, cron = excluded.cron,
    every_us = excluded.every_us, tz = excluded.tz, missed = excluded.missed,
    owner = excluded.owner, revision = excluded.revision, next_fire_at = excluded.next_fire_at,
    last_fire_at = excluded.last_fire_at, last_task_id = excluded.last_task_id;

-- name: schedule_delete
DELETE FROM schedules WHERE name = ? AND (? IS NULL OR revision = ?);

-- name: schedule_pause
UPDATE schedules SET paused = 1 WHERE name = ?;

-- name: schedule_unpause
UPDATE schedules SET paused = 0, next_fire_at = ? WHERE name = ? AND revision = ? AND paused = 1;

-- name: schedule_advance
-- The cursor's compare-and-set: applies only to the entry as the scheduler read it.
UPDATE schedules SET next_fire_at = ?, last_fire_at = coalesce(?, last_fire_at),
                     last_task_id = coalesce(?, last_task_id)
WHERE name = ? AND revision = ? AND next_fire_at = ? AND paused = 0;
