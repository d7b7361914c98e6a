-- wf_advance.lua: the common success of workflow steps, decided on the server in one step:
-- for each step given, complete its leased task, record its result, enqueue each dependent
-- whose inputs have all succeeded; then mark the workflow succeeded when every step has. No
-- read before it, no compare-and-set: two chord members finishing at once are handled one
-- after the other (in one run, or in two), and only the second sees every member succeeded.
-- A step whose workflow is failed or cancelled, that is not 'enqueued', or that is an error
-- callback answers 'slow', changing nothing for it, and the client takes the general path
-- (wf_settle.lua). The rule is workflow_engine._succeeded for a running workflow, which the
-- conformance suite pins. The steps of one run share their workflow, their queue and their
-- dependents (a chord's members settled together: the workflow's record is read and written
-- once for them all); each gets its own reply, as if it had run alone.
-- KEYS:    one 13-key block per queue (block 1: the settled tasks' queue; then the queues of
--          the dependents' messages); then 6 keys: the workflow record, its steps, its wake
--          list, the live set, the expiry index, the queue registry.
-- ARGV:    [1] the workflow's error callbacks, one letter per step (m a step of the workflow,
--          e an error callback), or '' when it has none, [2] JSON array, per dependent:
--          [index, [[first, last], ...]], the ranges of indices it waits for (0-based,
--          inclusive), [3] JSON array of the dependents' messages (lib.lua layout), same
--          order, [4] the eager continuation asked for (one step only): '' for none, else
--          "<k> <lease µs>": dependent k (1-based, a due-now step the client found
--          continuable), if it becomes ready and its queue is neither paused nor under a
--          concurrency limit, is stored ACTIVE under a new lease and token (as claim.lua
--          leases) instead of pending, and no worker is woken for it; [5] n, the number of
--          steps; then 4 per step: task id, lease token, result, step index (0-based); then
--          the dependents' payloads.
-- Returns: one reply per step, in order: {1} applied; {1, lease_expiry_us, token} applied,
--          dependent leased (its record is the message as sent, stored at lease_expiry_us
--          minus the lease asked for: the client builds the lease from what it sent); {0} lease
--          lost; {'slow'} not the common case (nothing written for it);
--          {'conflict' or 'duplicate', i} a dependent's message is refused (nothing written
--          for it).

local nk = #KEYS
local WF, STEPS, WAKE = KEYS[nk - 5], KEYS[nk - 4], KEYS[nk - 3]
local LIVE, EXPIRY, REG = KEYS[nk - 2], KEYS[nk - 1], KEYS[nk]
local mask, n = ARGV[1], tonumber(ARGV[5])
local first_payload = 5 + 4 * n
local b = block(1)
run_when_full(b)
local wf = redis.call('HMGET', WF, 'state', 'states', 'version', 'retention')
local running = (wf[1] == 'pending' or wf[1] == 'running') and type(wf[2]) == 'string'
local states = wf[2]
local version = tonumber(wf[3])
if running and version == nil then error('workflow record without a version: ' .. WF) end
local function letter(i) return string.sub(states, i + 1, i + 1) end
local function set_letter(i, l) states = string.sub(states, 1, i) .. l .. string.sub(states, i + 2) end
local deps = running and cjson.decode(ARGV[2]) or {}
local msgs = running and cjson.decode(ARGV[3]) or {}
local cont_k, cont_us = string.match(ARGV[4], '^([0-9]+) ([0-9]+)$')
cont_k = tonumber(cont_k)

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
  return {1, expiry, token}
end

-- Which dependents step `index` makes ready (reads only: the letters are local), or the
-- refusal of one's message. A range of inputs is checked in one string search: a chord
-- body's thousand inputs cost one.
local function ready_after()
  local ready, seen = {}, {}
  for k, d in ipairs(deps) do
    local all = letter(d[1]) == 'w'
    for _, r in ipairs(d[2]) do
      if all and string.find(string.sub(states, r[1] + 1, r[2] + 1), '[^s]') then all = false end
    end
    if all then
      local refused = check_message(msgs[k], seen, nil, false)
      if refused then return nil, {refused, k} end
      ready[#ready + 1] = k
    end
  end
  return ready, nil
end

local t = now()
local ctx = new_batch()
local replies = {}
local applied = 0
for s = 1, n do
  local o = 5 + 4 * (s - 1)
  local id, token, value, index = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3], tonumber(ARGV[o + 4])
  if not holds_lease(b.tprefix .. id, token) then
    replies[s] = {0}
  elseif not running or letter(index) ~= 'q'
      or (mask ~= '' and string.sub(mask, index + 1, index + 1) ~= 'm') then
    replies[s] = {'slow'}
  else
    local before = states
    set_letter(index, 's')
    local ready, refused = ready_after()
    if refused then
      states = before
      replies[s] = refused
    else
      -- Writes: the task's completion (as complete.lua), the dependents, the step's result.
      complete_leased(b, id, t, value, nil)  -- limits.lua
      count_done(b, t, false)
      replies[s] = {1}
      for _, k in ipairs(ready) do
        local cb = block(msgs[k][1])
        if n == 1 and k == cont_k and redis.call('EXISTS', cb.paused) == 0
            and queue_room(cb) == nil then
          replies[s] = lease_continued(msgs[k], ARGV[first_payload + k], t)
        else
          store_message(msgs[k], ARGV[first_payload + k], t, ctx)
        end
        set_letter(deps[k][1], 'q')
      end
      redis.call('HSET', STEPS, 'r:' .. index, value)
      applied = applied + 1
    end
  end
end
if applied == 0 then return replies end
wake_all(ctx)
for qi, _ in pairs(ctx.woken) do redis.call('SADD', REG, queue_name(block(qi))) end
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
version = version + applied
local workflow_id = string.match(WF, '{([^}]*)}')
if done then
  redis.call('HSET', WF, 'state', 'succeeded', 'states', states, 'version', version,
    'finished_at', t)
  redis.call('SREM', LIVE, workflow_id)
  redis.call('ZADD', EXPIRY, t + math.floor(tonumber(wf[4]) * 1000000), workflow_id)
  wake_workflow(WAKE)  -- workflow_lib.lua
else
  redis.call('HSET', WF, 'state', 'running', 'states', states, 'version', version)
end
return replies
