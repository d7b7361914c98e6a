-- release.lua: give an unfinished task back: PENDING with its old ready time (the front).
-- KEYS:    one 13-key block: the task's queue (see lib.lua).
-- ARGV:    [1] id, [2] token.
-- Returns: 1 when released, 0 when the lease was lost (nothing changed).

local b = block(1)
local id = ARGV[1]
local tkey = b.tprefix .. id
if not holds_lease(tkey, ARGV[2]) then
  return 0
end
local t = now()
local score = tonumber(redis.call('HGET', tkey, 'rscore')) or t
-- Into pending before out of active (lib.lua: a task is always in one state set).
redis.call('ZADD', b.pending, score, id)
redis.call('HSET', tkey, 'state', 'pending', 'since', t)
redis.call('HDEL', tkey, 'lease')
redis.call('ZREM', b.active, id)
wake(b)
return 1
