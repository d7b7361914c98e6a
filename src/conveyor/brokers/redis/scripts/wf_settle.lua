-- wf_settle.lua: settle a workflow step's task and write its workflow's change, in one step.
-- The change was computed by the client from the workflow it read at `version`; it is written
-- only over that version (compare-and-set), else nothing is written and the client reads again.
-- KEYS:    one 13-key block per queue (block 1: the settled task's queue; then the queues of
--          the messages to store); then 6 keys: the workflow record, its steps, its wake list,
--          the live set, the expiry index, the queue registry.
-- ARGV:    [1] mode: 'success' (complete the leased task), 'failure' (archive it), 'expired'
--          (lease recovery: archive the task if its lease lapsed and this recovery archives
--          it, as recover.lua would), 'archived' (the task is archived already: workflow
--          change only), 'cancel' (no task);
--          [2] task id; [3] lease token ('expired': "<max crashes> <p|r>", p when the crash
--          limit archives it, r when its retries are out); [4] the step's result (success) or
--          error;
--          [5] the workflow version read ('' when there is no workflow: settle the task only);
--          [6] the change as JSON ('' for none): {state, error, failed_task, version,
--          finished (1 finished now, -1 reopened, 0 neither), retention_us, id,
--          steps: [[index (0-based), state letter (see redis/workflows.py), 'r' (result :=
--          ARGV[4]) | 'e' (error := ARGV[4]) | '']]};
--          [7] JSON array of messages to store (lib.lua layout); [8..] their payloads.
-- Returns: {1} applied; {0} lease lost (for 'archived': the task is not archived; for
--          'expired': its lease has not lapsed, or recovery would not archive it so);
--          {'stale'} the workflow changed since it was read; {'conflict' or 'duplicate', i}.

local nk = #KEYS
local WF, STEPS, WAKE = KEYS[nk - 5], KEYS[nk - 4], KEYS[nk - 3]
local LIVE, EXPIRY, REG = KEYS[nk - 2], KEYS[nk - 1], KEYS[nk]
local mode, id, token, value = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local b = block(1)
local tkey = b.tprefix .. id
local t = now()
if mode == 'success' or mode == 'failure' then
  run_when_full(b)
  if not holds_lease(tkey, token) then return {0} end
elseif mode == 'archived' then
  if redis.pcall('HGET', tkey, 'state') ~= 'archived' then return {0} end
elseif mode == 'expired' then
  run_when_full(b)
  -- 'lease' holds the expiry the active set scores it by (claim.lua and extend.lua set both).
  local rec = redis.pcall('HMGET', tkey, 'state', 'retried', 'max_retry', 'crashes', 'lease')
  if rec.err or rec[1] ~= 'active' or (tonumber(rec[5]) or t) >= t then return {0} end
  local sp = string.find(token, ' ', 1, true)
  local poison = (tonumber(rec[4]) or 0) + 1 >= tonumber(string.sub(token, 1, sp - 1))
  local out = (tonumber(rec[2]) or 0) + 1 > (tonumber(rec[3]) or 0)
  if (poison and 'p' or (out and 'r' or '')) ~= string.sub(token, sp + 1) then return {0} end
end
if ARGV[5] ~= '' and redis.call('HGET', WF, 'version') ~= ARGV[5] then return {'stale'} end
local msgs = cjson.decode(ARGV[7])
local seen = {}
for i, m in ipairs(msgs) do
  local refused = check_message(m, seen, nil, false)
  if refused then return {refused, i} end
end
if mode == 'success' then
  complete_leased(b, id, t, value, nil)  -- limits.lua
  count_done(b, t, false)
elseif mode == 'failure' then
  fail_task(b, id, t, value, nil)
elseif mode == 'expired' then
  redis.call('HINCRBY', tkey, 'crashes', 1)
  fail_task(b, id, t, value, nil)
end
if mode == 'failure' or mode == 'expired' then slot_freed(b) end  -- as fail.lua
local keys = {wf = WF, steps = STEPS, wake = WAKE, live = LIVE, expiry = EXPIRY}
store_and_change(msgs, 7, REG, ARGV[6], value, t, keys)  -- workflow_lib.lua
return {1}
