-- cancel.lua: ask for the current attempt of an ACTIVE task to be cancelled (request_cancel).
-- KEYS:    [1] the task's hash (ns:{q}:t:<id>), [2] the queue's cancel requests
--          (ns:{q}:cancels, HASH task id -> token), [3] the task-record prefix (ns:{q}:t:).
-- ARGV:    [1] task id.
-- Returns: {'ok'}, {'missing'} (no such task) or {'inactive', state}; only 'ok' stores anything.

local cur = redis.call('HMGET', KEYS[1], 'state', 'token')
if not cur[1] then return {'missing'} end
if cur[1] ~= 'active' then return {'inactive', cur[1]} end
-- Drop requests of attempts that have ended: the task moved on (another token) or is gone.
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local other = redis.call('HMGET', KEYS[3] .. held[i], 'state', 'token')
  if other[1] ~= 'active' or other[2] ~= held[i + 1] then
    redis.call('HDEL', KEYS[2], held[i])
  end
end
redis.call('HSET', KEYS[2], ARGV[1], cur[2])
return {'ok'}
