-- schedule_forget.lua: take a queue out of the set of queues whose entries fired workflows,
-- when nothing needs it there any more (a standalone server only: the keys are in three slots).
-- KEYS:    [1] the entry name index (hash: name -> queue), [2] the set of queues whose entries
--          fired workflows, [3] the queue's pending workflow records (hash), [4] their fire
--          times (sorted set).
-- ARGV:    [1] the queue's name.
-- Returns: 1 when the queue was taken out, else 0 (a workflow of it is still pending, or an
--          entry of it exists: a fire of that entry may be about to record one).

-- The set only has to find pending records whose entries are gone: while an entry of the
-- queue exists, the index names the queue, and a fire records only for an existing entry.
if redis.call('EXISTS', KEYS[3], KEYS[4]) > 0 then return 0 end
local index = redis.call('HGETALL', KEYS[1])
for i = 2, #index, 2 do
  if index[i] == ARGV[1] then return 0 end
end
return redis.call('SREM', KEYS[2], ARGV[1])
