-- save_progress.lua: store a pipeline task's progress document, fenced by its lease.
-- KEYS:    [1] the task record (hash; keys.task), in the queue's slot.
-- ARGV:    [1] the lease's token, [2] the progress document (bytes, stored untouched).
-- Returns: 1 when stored, 0 when the task is not ACTIVE under that token (nothing changed).
-- The document is a field of the task hash, so every path that deletes the record deletes it.

if not holds_lease(KEYS[1], ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
return 1
