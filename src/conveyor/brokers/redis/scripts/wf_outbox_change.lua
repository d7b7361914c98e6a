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
for _, i in ipairs(cjson.decode(ARGV[4])) do redis.call('SADD', OUTBOX, i) end
write_change(WF, STEPS, WAKE, cjson.decode(ARGV[2]), value, t)  -- workflow_lib.lua
return {1, t}
