-- workflow_lib.lua: workflow helpers, prepended (after lib.lua) to the wf_*.lua scripts.
-- KEYS:    none of its own; each caller passes its workflow's record, steps and wake list.
-- ARGV:    none of its own.
-- Returns: nothing; defines local helpers only.
-- A workflow's steps' states are one letter each in its record's 'states' field (w waiting,
-- q enqueued, s succeeded, f failed, c cancelled): a chord's thousand members read as one value.

-- Wake whoever waits on a workflow (client.wait, which returns only once it finished: so it
-- is called when a change finishes it, not at every step). At most WAKE_TOKENS stay when
-- nobody waits; they go with the workflow when it is purged.
local function wake_workflow(wake)
  redis.call('LPUSH', wake, '1', '1', '1', '1', '1', '1', '1', '1')
  redis.call('LTRIM', wake, 0, WAKE_TOKENS - 1)
end

-- Write a change the client computed (`c`, decoded from wf_settle.lua's JSON layout) to the
-- workflow record `wf` and its steps hash `steps`: state, version, error, finish time, the
-- letters of the steps it changes and the settled step's result or error (`value`); then wake
-- the workflow's waiters if it finished. The caller checked the version it was computed from.
local function write_change(wf, steps, wake, c, value, t)
  redis.call('HSET', wf, 'state', c.state, 'version', c.version)
  if c.error ~= '' then redis.call('HSET', wf, 'error', c.error, 'failed_task', c.failed_task)
  else redis.call('HDEL', wf, 'error', 'failed_task') end
  if c.finished == 1 then
    redis.call('HSET', wf, 'finished_at', t)
  elseif c.finished == -1 then
    redis.call('HDEL', wf, 'finished_at')
  end
  local states = redis.call('HGET', wf, 'states')
  for _, s in ipairs(c.steps) do
    local i = s[1]
    states = string.sub(states, 1, i) .. s[2] .. string.sub(states, i + 2)
    if s[3] == 'r' then
      redis.call('HSET', steps, 'r:' .. i, value)
      redis.call('HDEL', steps, 'e:' .. i)
    elseif s[3] == 'e' then
      redis.call('HSET', steps, 'e:' .. i, value)
    end
  end
  redis.call('HSET', wf, 'states', states)
  if c.finished == 1 then wake_workflow(wake) end
end

-- Keep the live set and the expiry index in step with change `c` (after write_change): a
-- finished workflow leaves the live set and expires after its retention; one running again
-- (a failed step re-run) comes back.
local function index_change(live, expiry, c, t)
  if c.finished == 1 then
    redis.call('SREM', live, c.id)
    redis.call('ZADD', expiry, t + c.retention_us, c.id)
  elseif c.finished == -1 then
    redis.call('SADD', live, c.id)
    redis.call('ZREM', expiry, c.id)
  end
end

-- The tail both wf_settle.lua and wf_manage.lua end with: store the messages `msgs` (their
-- payloads from ARGV[first_payload + i]), wake their queues' workers and register those queues
-- in `reg`; then write the workflow change `change_json` ('' for none) with its step `value`.
local function store_and_change(msgs, first_payload, reg, change_json, value, t, keys)
  local ctx = new_batch()
  for i, m in ipairs(msgs) do
    store_message(m, ARGV[first_payload + i], t, ctx)
  end
  wake_all(ctx)
  for qi, _ in pairs(ctx.woken) do redis.call('SADD', reg, queue_name(block(qi))) end
  if change_json ~= '' then
    local c = cjson.decode(change_json)
    write_change(keys.wf, keys.steps, keys.wake, c, value, t)
    index_change(keys.live, keys.expiry, c, t)
  end
end
