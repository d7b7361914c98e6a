-- result_watch.lua: flag a task as waited on (client.wait) and read its state, in one step.
-- complete.lua and fail_task (lib.lua) push to the task's result wake list only for a flagged
-- record, so completions nobody waits for cost one more field in a read they make anyway.
-- The flag is set before the state is read, so an end after this script always wakes.
-- KEYS:    [1] the task's record.
-- ARGV:    none.
-- Returns: the task's state; false when there is no such task (nothing is written then).

local tkey = KEYS[1]
local state = redis.pcall('HGET', tkey, 'state')
if type(state) ~= 'string' then return false end
if state ~= 'completed' and state ~= 'archived' then redis.call('HSET', tkey, 'waited', '1') end
return state
