-- wf_advance.lua: the common success of a workflow step, decided on the server in one step:
-- complete the leased task, record its result, enqueue each dependent whose inputs have all
-- succeeded, and mark the workflow succeeded when every step has. No read before it, no
-- compare-and-set: two chord members finishing at once are simply two scripts, run one after
-- the other, and only the second sees every member succeeded. Anything else (the workflow
-- failed or cancelled, the step not 'enqueued', an error callback) answers 'slow', changing
-- nothing, and the client takes the general path (wf_settle.lua). The rule is
-- workflow_engine._succeeded for a running workflow, which the conformance suite pins.
-- KEYS:    one 13-key block per queue (block 1: the settled task's queue; then the queues of
--          the dependents' messages); then 6 keys: the workflow record, its steps, its wake
--          list, the live set, the expiry index, the queue registry.
-- ARGV:    [1] task id, [2] lease token, [3] the step's result, [4] the step's index (0-based),
--          [5] the workflow's error callbacks, one letter per step (m a step of the workflow,
--          e an error callback), or '' when it has none, [6] JSON array, per dependent:
--          [index, [[first, last], ...]], the ranges of indices it waits for (0-based,
--          inclusive), [7] JSON array of the dependents' messages (lib.lua layout), same
--          order, [8] the eager continuation asked for: '' for none, else "<k> <lease µs>":
--          dependent k (1-based, a due-now step the client found continuable), if it becomes
--          ready and its queue is neither paused nor under a concurrency limit, is stored
--          ACTIVE under a new lease and token (as claim.lua leases) instead of pending, and
--          no worker is woken for it; [9..] the dependents' payloads.
-- Returns: {1} applied; {1, lease_expiry_us, {block index, id, token, values of
--          CONT_FIELDS}} applied, dependent leased (claim.lua's reply entry); {0} lease lost;
--          {'slow'} not the common case (nothing written); {'conflict' or 'duplicate', i} a
--          dependent's message is refused (nothing written).

local nk = #KEYS
local WF, STEPS, WAKE = KEYS[nk - 5], KEYS[nk - 4], KEYS[nk - 3]
local LIVE, EXPIRY, REG = KEYS[nk - 2], KEYS[nk - 1], KEYS[nk]
local id, token, value, index, mask = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local b = block(1)
local tkey = b.tprefix .. id
run_when_full(b)
if not holds_lease(tkey, token) then return {0} end
local wf = redis.call('HMGET', WF, 'state', 'states', 'version', 'retention')
if (wf[1] ~= 'pending' and wf[1] ~= 'running') or type(wf[2]) ~= 'string' then
  return {'slow'}
end
local states = wf[2]
local function letter(i) return string.sub(states, i + 1, i + 1) end
local function set_letter(i, l) states = string.sub(states, 1, i) .. l .. string.sub(states, i + 2) end
if letter(index) ~= 'q' or (mask ~= '' and string.sub(mask, index + 1, index + 1) ~= 'm') then
  return {'slow'}
end
set_letter(index, 's')
-- Which dependents are ready now (reads only), and are their messages storable? A range of
-- inputs is checked in one string search: a chord body's thousand inputs cost one.
local deps = cjson.decode(ARGV[6])
local msgs = cjson.decode(ARGV[7])
local ready = {}
local seen = {}
for k, d in ipairs(deps) do
  local all = letter(d[1]) == 'w'
  for _, r in ipairs(d[2]) do
    if all and string.find(string.sub(states, r[1] + 1, r[2] + 1), '[^s]') then all = false end
  end
  if all then
    local refused = check_message(msgs[k], seen, nil, false)
    if refused then return {refused, k} end
    ready[#ready + 1] = k
  end
end
-- The fields claim.lua returns for a leased task (its CLAIM_FIELDS without 'crashes').
local CONT_FIELDS = {'enqueued_at', 'state', 'type', 'payload', 'encoding', 'max_retry',
                     'retried', 'timeout', 'deadline', 'retention', 'unique_key', 'error',
                     'failed_at', 'headers'}
local cont_k, cont_us = string.match(ARGV[8], '^([0-9]+) ([0-9]+)$')
cont_k = tonumber(cont_k)
local continued = nil

-- Store dependent message m, then lease it at once (an eager continuation): its record is
-- written as store_message writes it, its pending entry is never added, no worker is woken.
local function lease_continued(m, payload, t)
  local cb = block(m[1])
  store_message(m, payload, t, new_batch())
  local token = redis.call('INCRBY', cb.seq, 1)
  local expiry = t + tonumber(cont_us)
  local tkey = cb.tprefix .. m[2]
  redis.call('ZADD', cb.active, expiry, m[2])
  redis.call('HSET', tkey, 'state', 'active', 'token', token, 'lease', expiry, 'since', t)
  redis.call('SADD', REG, queue_name(cb))
  continued = {expiry, {m[1], m[2], token, redis.call('HMGET', tkey, unpack(CONT_FIELDS))}}
end

-- Writes: the task's completion (as complete.lua), the dependents, the workflow.
local t = now()
complete_leased(b, id, t, value, nil)  -- limits.lua
count_done(b, t, false)
local ctx = new_batch()
for _, k in ipairs(ready) do
  local cb = block(msgs[k][1])
  if k == cont_k and continued == nil and redis.call('EXISTS', cb.paused) == 0
      and queue_room(cb) == nil then
    lease_continued(msgs[k], ARGV[8 + k], t)
  else
    store_message(msgs[k], ARGV[8 + k], t, ctx)
  end
  set_letter(deps[k][1], 'q')
end
wake_all(ctx)
for qi, _ in pairs(ctx.woken) do redis.call('SADD', REG, queue_name(block(qi))) end
redis.call('HSET', STEPS, 'r:' .. index, value)
-- Finished when every step of the workflow succeeded (error callbacks never run then).
local done
if mask == '' then
  done = string.find(states, '[^s]') == nil
else
  done = true
  local p = string.find(states, '[^s]')
  while p do
    if string.sub(mask, p, p) == 'm' then
      done = false
      break
    end
    p = string.find(states, '[^s]', p + 1)
  end
end
local version = tonumber(wf[3]) + 1
local workflow_id = string.match(WF, '{([^}]*)}')
if done then
  redis.call('HSET', WF, 'state', 'succeeded', 'states', states, 'version', version,
    'finished_at', t)
  redis.call('SREM', LIVE, workflow_id)
  redis.call('ZADD', EXPIRY, t + math.floor(tonumber(wf[4]) * 1000000), workflow_id)
else
  redis.call('HSET', WF, 'state', 'running', 'states', states, 'version', version)
end
if done then wake_workflow(WAKE) end  -- workflow_lib.lua
if continued then return {1, continued[1], continued[2]} end
return {1}
