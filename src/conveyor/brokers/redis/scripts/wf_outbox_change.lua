-- wf_outbox_change.lua: write a workflow's change on Redis Cluster, in the workflow's slot only.
-- The change was computed by the client from the workflow it read at `version` and is written
-- only over that version (compare-and-set). The steps it makes ready are not enqueued here
-- (their queues are in other slots): their indices go to the workflow's outbox, in this same
-- step, and the client drains the outbox next. The leased task is not touched either: the
-- client completes or archives it after the drain, so a crash in between leaves the task
-- active, and its redelivery finds the step recorded, drains again and completes it.
-- KEYS:    [1] the workflow record, [2] its steps, [3] its wake list, [4] its outbox.
-- ARGV:    [1] the workflow version read; [2] the change as JSON (wf_settle.lua's layout);
--          [3] the step's result or error (for the step marked 'r' or 'e'); [4] JSON array of
--          the indices of the steps to enqueue.
-- Returns: {1, now_us} applied; {'stale'} the workflow changed since it was read.

local WF, STEPS, WAKE, OUTBOX = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local value = ARGV[3]
if redis.call('HGET', WF, 'version') ~= ARGV[1] then return {'stale'} end
local t = now()
local c = cjson.decode(ARGV[2])
redis.call('HSET', WF, 'state', c.state, 'version', c.version)
if c.error ~= '' then redis.call('HSET', WF, 'error', c.error, 'failed_task', c.failed_task)
else redis.call('HDEL', WF, 'error', 'failed_task') end
if c.finished == 1 then
  redis.call('HSET', WF, 'finished_at', t)
elseif c.finished == -1 then
  redis.call('HDEL', WF, 'finished_at')
end
local states = redis.call('HGET', WF, 'states')
for _, s in ipairs(c.steps) do
  local i = s[1]
  states = string.sub(states, 1, i) .. s[2] .. string.sub(states, i + 2)
  if s[3] == 'r' then
    redis.call('HSET', STEPS, 'r:' .. i, value)
    redis.call('HDEL', STEPS, 'e:' .. i)
  elseif s[3] == 'e' then
    redis.call('HSET', STEPS, 'e:' .. i, value)
  end
end
redis.call('HSET', WF, 'states', states)
for _, i in ipairs(cjson.decode(ARGV[4])) do redis.call('SADD', OUTBOX, i) end
redis.call('LPUSH', WAKE, '1', '1', '1', '1', '1', '1', '1', '1')
redis.call('LTRIM', WAKE, 0, WAKE_TOKENS - 1)
return {1, t}
