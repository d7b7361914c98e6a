-- schedule_admin.lua: remove, pause or unpause one schedule entry.
-- KEYS:    [1] the entry's record, [2] its queue's due set (both in the queue's slot).
-- ARGV:    [1] 'remove', 'pause' or 'unpause'; [2] the entry name; [3] the revision it must
--          have ('' for any); [4] unpause only: the new cursor (µs).
-- Returns: -1 no such entry; 0 it has another revision (nothing changed); 1 done (unpausing an
--          entry that is not paused changes nothing and returns 1).

local rk, due = KEYS[1], KEYS[2]
local verb, name, rev = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HMGET', rk, 'rev', 'paused')
if not cur[1] then return -1 end
if rev ~= '' and cur[1] ~= rev then return 0 end
if verb == 'remove' then
  redis.call('DEL', rk)
  redis.call('ZREM', due, name)
elseif verb == 'pause' then
  redis.call('HSET', rk, 'paused', '1')
  redis.call('ZREM', due, name)
elseif cur[2] == '1' then
  redis.call('HSET', rk, 'paused', '0', 'next', ARGV[4])
  redis.call('ZADD', due, ARGV[4], name)
end
return 1
