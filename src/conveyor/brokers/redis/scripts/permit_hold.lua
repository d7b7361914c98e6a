-- permit_hold.lua: Redis Cluster, a queue's side of its tasks' type limits (type_permit.lua).
-- KEYS:    one 13-key block: the queue (see lib.lua).
-- ARGV:    [1] operation:
--          'hold': then quadruples id, token, type, due (µs): claimed tasks a limit of their type
--            refused, each only while ACTIVE under that token: due > 0, its rate: SCHEDULED
--            until due (limits.lua's hold_back); due < 0, a permit: SCHEDULED until -due at
--            most, marked held and listed in <queue prefix>held:<type> at its pending score,
--            for 'unhold' to move back sooner. Neither is a failed attempt: nothing counted.
--          'unhold': [2] a type, [3] how many: its held tasks back to the front of pending.
--          'running': [2] a type: its ACTIVE tasks in the queue.
-- Returns: 'hold': how many were held; 'unhold': -1 when the queue holds no task at all then
--          (deleted, or empty: its type's waiting entry may go), else 1 when tasks were held
--          (idle workers woken), else 0; 'running': id, token, lease expiry (µs) of each.

local b = block(1)
local op = ARGV[1]
local t = now()

if op == 'hold' then
  run_when_full(b)
  local held = 0
  for i = 2, #ARGV - 3, 4 do
    local id, token, task_type, due = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    local tkey = b.tprefix .. id
    if holds_lease(tkey, token) then
      if due > 0 then
        hold_back(b, id, due, t)
      else
        local score = redis.call('HGET', tkey, 'rscore') or int_text(t)
        redis.call('ZADD', b.scheduled, int_text(-due), id)
        redis.call('HSET', tkey, 'state', 'scheduled', 'ready', seconds(-due), 'since', t,
          'held', '1')
        redis.call('ZADD', queue_prefix(b) .. 'held:' .. task_type, score, id)
      end
      redis.call('HDEL', tkey, 'lease')
      redis.call('ZREM', b.active, id)
      held = held + 1
    end
  end
  if held > 0 then slot_freed(b) end
  return held
elseif op == 'unhold' then
  local woke = 0
  if redis.call('EXISTS', queue_prefix(b) .. 'held:' .. ARGV[2]) == 1 then
    unhold(b, ARGV[2], tonumber(ARGV[3]), t)  -- drops the ids of tasks gone (a forced delete)
    wake(b)
    woke = 1
  end
  -- No task at all (held ones are scheduled, a claim's are active until held): none can be
  -- held for the type but by a later 'take', which renews the waiting entry.
  for _, name in ipairs({'pending', 'scheduled', 'retry', 'active', 'archived', 'completed'}) do
    if redis.call('ZCARD', b[name]) > 0 then return woke end
  end
  return -1
elseif op == 'running' then
  local out = {}
  local active = redis.call('ZRANGE', b.active, 0, -1, 'WITHSCORES')
  for j = 1, #active, 2 do
    local rec = redis.pcall('HMGET', b.tprefix .. active[j], 'type', 'state', 'token')
    if not rec.err and rec[1] == ARGV[2] and rec[2] == 'active' and rec[3] then
      out[#out + 1] = active[j]
      out[#out + 1] = rec[3]
      out[#out + 1] = active[j + 1]
    end
  end
  return out
end
return redis.error_reply('permit_hold.lua: unknown operation')
