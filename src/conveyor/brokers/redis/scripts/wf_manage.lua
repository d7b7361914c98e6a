-- wf_manage.lua: the inspector archives or deletes a workflow step's task, and the workflow
-- fails in the same step (nothing after the step runs; its error callbacks are stored here).
-- The change was computed by the client from the workflow it read at `version`; it is written
-- only over that version (compare-and-set), else nothing is done and the client reads again.
-- KEYS:    one 13-key block per queue (block 1: the task's queue; then the queues of the
--          messages to store); then 6 keys: the workflow record, its steps, its wake list, the
--          live set, the expiry index, the queue registry (as wf_settle.lua).
-- ARGV:    [1] 'archive' (a PENDING, SCHEDULED or RETRY task) or 'delete' (any but ACTIVE);
--          [2] the task id; [3] the workflow version read ('' when there is no change to
--          write: the task only); [4] the change as JSON (wf_settle.lua's layout, '' for none);
--          [5] the step's error; [6] JSON array of messages to store (lib.lua layout);
--          [7..] their payloads.
-- Returns: {1} done; {0} no such task; {'state', s} the operation does not apply to a task in
--          state s; {'stale'} the workflow changed since it was read; {'conflict' or
--          'duplicate', i} a message to store is refused.

local nk = #KEYS
local WF, STEPS, WAKE = KEYS[nk - 5], KEYS[nk - 4], KEYS[nk - 3]
local LIVE, EXPIRY, REG = KEYS[nk - 2], KEYS[nk - 1], KEYS[nk]
local op, id, value = ARGV[1], ARGV[2], ARGV[5]
local APPLIES = {
  delete = {pending = true, scheduled = true, retry = true, archived = true, completed = true},
  archive = {pending = true, scheduled = true, retry = true},
}
local b = block(1)
local tkey = b.tprefix .. id
local t = now()
local state = redis.call('HGET', tkey, 'state')
if state == false then return {0} end
if not APPLIES[op][state] then return {'state', state} end
if ARGV[3] ~= '' and redis.call('HGET', WF, 'version') ~= ARGV[3] then return {'stale'} end
local msgs = cjson.decode(ARGV[6])
local seen = {}
for i, m in ipairs(msgs) do
  local refused = check_message(m, seen, nil, false)
  if refused then return {refused, i} end
end
unlink(b, id, state)
if op == 'delete' then
  release_unique(b, id, redis.pcall('HGET', tkey, 'unique_key'))
  redis.call('DEL', tkey)
else
  redis.call('ZADD', b.archived, t, id)
  redis.call('HSET', tkey, 'state', 'archived', 'since', t)
end
local keys = {wf = WF, steps = STEPS, wake = WAKE, live = LIVE, expiry = EXPIRY}
store_and_change(msgs, 6, REG, ARGV[4], value, t, keys)  -- workflow_lib.lua
return {1}
