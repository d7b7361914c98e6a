-- count_running.lua: count the ACTIVE tasks of one queue and task type that no running count
-- holds yet in the type's count (a concurrency limit was just set: limits.lua).
-- KEYS:    [1] the queue's active set, [2] the type's running count (in the queue's slot on
--          Cluster).
-- ARGV:    [1] the prefix of the queue's task records, [2] the task type.
-- Returns: how many tasks it counted.

-- Each task is counted once: a task a claim counted names its count ('run') already, and one
-- counted here is marked the same way, so its way out of ACTIVE gives the slot back.
local counted = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local tkey = ARGV[1] .. id
  local rec = redis.pcall('HMGET', tkey, 'type', 'state', 'run')
  if not rec.err and rec[1] == ARGV[2] and rec[2] == 'active' and not rec[3] then
    redis.call('HSET', tkey, 'run', KEYS[2])
    counted = counted + 1
  end
end
if counted > 0 then redis.pcall('INCRBY', KEYS[2], counted) end
return counted
