-- limits.lua: flow-control helpers, prepended (after lib.lua) to enqueue.lua and claim.lua.
-- KEYS:    none of its own; a queue's length limit is the key <queue prefix>limit, a STRING
--          "<max_length> <reject|drop_oldest>", built from the block's seq key (same slot).
-- ARGV:    none of its own; claim.lua passes the rate limits (see rate_table).
-- Returns: nothing; defines local helpers only.

local DROPPED_ERROR = 'dropped: queue full'

-- A queue's length limit: max_length and overflow, or nil.
local function queue_limit(b)
  local spec = redis.pcall('GET', string.sub(b.seq, 1, -4) .. 'limit')
  if type(spec) ~= 'string' then return nil end
  local max, overflow = string.match(spec, '^([0-9]+) ([^ ]+)$')
  if max == nil then return nil end
  return tonumber(max), overflow
end

-- Whether messages first..last fit their queues' length limits. `unflushed` counts, per block,
-- the pending tasks this script run stored and has not yet added to the pending set. Returns
-- nil and the drops to make ({block, n} each) when the group fits, else the position in the
-- group of the first message of a full queue.
local function make_room(msgs, first, last, unflushed)
  local arriving, order = {}, {}
  for i = first, last do
    local qi = msgs[i][1]
    if arriving[qi] == nil then
      arriving[qi] = 0
      order[#order + 1] = {qi, i}
    end
    arriving[qi] = arriving[qi] + 1
  end
  local drops = {}
  for _, o in ipairs(order) do
    local qi = o[1]
    local b = block(qi)
    local max, overflow = queue_limit(b)
    if max then
      local pending = redis.call('ZCARD', b.pending)
      local waiting = pending + redis.call('ZCARD', b.scheduled) + redis.call('ZCARD', b.retry)
        + (unflushed[qi] or 0)
      local excess = waiting + arriving[qi] - max
      if excess > 0 then
        -- Only tasks already in the pending set are dropped, never this run's own.
        if overflow ~= 'drop_oldest' or pending < excess then
          return o[2] - first + 1, nil
        end
        drops[#drops + 1] = {qi, excess}
      end
    end
  end
  return nil, drops
end

-- Archive the `n` oldest pending tasks of block `qi` (not a failed attempt: nothing counted).
local function drop_oldest(qi, n, t)
  local b = block(qi)
  local ids = redis.call('ZPOPMIN', b.pending, n)
  for j = 1, #ids, 2 do
    redis.call('ZADD', b.archived, t, ids[j])
    redis.pcall('HSET', b.tprefix .. ids[j], 'state', 'archived', 'error', DROPPED_ERROR,
      'since', t)
  end
end

-- The rate limits claim.lua is given: "<type> <count> <period µs>" triples separated by
-- spaces (task types have no spaces), as {type = {count, period_us}}.
local function rate_table(spec)
  local rates = {}
  for name, count, period in string.gmatch(spec or '', '([^ ]+) ([0-9]+) ([0-9]+)') do
    rates[name] = {tonumber(count), tonumber(period)}
  end
  return rates
end

-- One step of a token bucket (as conveyor.brokers.limits.take_token), stored at `key` as the
-- STRING "<tokens> <µs counted at>", expiring once it would be full again anyway. Returns nil
-- when a task may start now (a token taken), else the µs time it may start. `ahead`: tasks of
-- the same type this claim already held back (each waits one token longer than the last).
local function take_token(key, rate, t, ahead)
  local count, per = rate[1], rate[2] / rate[1]
  local tokens, at = count, t
  local stored = redis.pcall('GET', key)
  if type(stored) == 'string' then
    local a, b2 = string.match(stored, '^([^ ]+) ([^ ]+)$')
    if tonumber(a) and tonumber(b2) then tokens, at = tonumber(a), tonumber(b2) end
  end
  local refilled = math.min(count, tokens + math.max(0, t - at) / per)
  local wait = nil
  if refilled >= 1 and ahead == 0 then
    refilled = refilled - 1
  else
    wait = t + math.ceil((ahead + 1 - refilled) * per)
  end
  local ttl_ms = math.ceil(rate[2] / 1000) + 1000
  redis.pcall('SET', key, tostring(refilled) .. ' ' .. digits(t), 'PX', ttl_ms)
  return wait
end

-- A claimed-for task over its type's rate: SCHEDULED until `due` µs, nothing counted. It was
-- popped from pending, so it is in no state set until this adds it to scheduled.
local function hold_back(b, id, due, t)
  redis.call('ZADD', b.scheduled, due, id)
  redis.call('HSET', b.tprefix .. id, 'state', 'scheduled', 'ready', seconds(due), 'since', t)
end
