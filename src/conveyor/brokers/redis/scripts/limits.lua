-- limits.lua: flow-control helpers, prepended (after lib.lua) to enqueue.lua, claim.lua,
-- peek.lua, complete.lua, complete_all.lua, fail.lua, wf_advance.lua and wf_settle.lua; and
-- complete_leased, the one way a leased task is completed (it frees the task's slot).
-- KEYS:    none of its own; a queue's length limit is the key <queue prefix>limit, a STRING
--          "<max_length> <reject|drop_oldest>", built from the block's seq key (same slot), as
--          are its concurrency limit (<queue prefix>concurrency) and its held tasks
--          (<queue prefix>held:<type>).
-- ARGV:    none of its own; claim.lua passes the rate and type concurrency limits.
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

-- A rate limit's bucket as one claim uses it (as conveyor.brokers.limits.take_token): `key`
-- is a ZSET with one entry per claim that took tokens, "<claim id>:<k>" for its k tokens,
-- scored by the µs time they were taken (they are back one period later); `out_key` holds
-- how many tokens are still out (the sum of the entries' k). A claim drops the entries back,
-- reads the count, counts in Lua as it takes tokens, and adds one entry and writes the count
-- at the end (save_bucket): a few commands per claim, whatever the number of tasks. A bucket
-- key of another type limits nothing (nil).
local function entry_tokens(member)
  return tonumber(string.match(member, ':([0-9]+)$')) or 1
end

local function open_bucket(key, out_key, rate, t)
  local back = redis.pcall('ZRANGEBYSCORE', key, '-inf', t - rate[2])
  if back.err then return nil end
  local returned = 0
  for j = 1, #back do returned = returned + entry_tokens(back[j]) end
  for c = 1, #back, ZADD_CHUNK do
    redis.call('ZREM', key, unpack(back, c, math.min(c + ZADD_CHUNK - 1, #back)))
  end
  local stored = tonumber(redis.pcall('GET', out_key))
  local dirty = returned > 0
  if stored == nil then
    -- No count (or not a number): counted from the entries, and written back.
    stored, dirty = 0, true
    local left = redis.call('ZRANGE', key, 0, -1)
    for j = 1, #left do stored = stored + entry_tokens(left[j]) end
  else
    stored = math.max(0, stored - returned)
  end
  return {key = key, out_key = out_key, rate = rate, stored = stored, taken = 0, dirty = dirty}
end

-- The µs time the `n`-th (from 0) oldest token still out was taken, walking the entries (only
-- for a task over the rate; `at` when the entries hold fewer).
local function token_time(bucket, n, at)
  if bucket.entries == nil then
    bucket.entries = redis.call('ZRANGE', bucket.key, 0, -1, 'WITHSCORES')
  end
  local seen = 0
  for j = 1, #bucket.entries, 2 do
    seen = seen + entry_tokens(bucket.entries[j])
    if n < seen then return tonumber(bucket.entries[j + 1]) end
  end
  return at
end

-- Take a token at `t` for a task: nil when it may start, else the µs time it may start.
-- `ahead`: tasks of the same type this claim already held back (each waits for the next token
-- after the last one's).
local function take_token(bucket, t, ahead)
  local count, period = bucket.rate[1], bucket.rate[2]
  local out = bucket.stored + bucket.taken
  if out < count and ahead == 0 then
    bucket.taken = bucket.taken + 1
    return nil
  end
  -- Tokens come back in the order they were taken (this claim's last, all at `t`); one round
  -- of them serves `out` tasks.
  local i = out - count + ahead
  local at = t
  if i % out < bucket.stored then at = token_time(bucket, i % out, t) end
  return at + period * (math.floor(i / out) + 1)
end

-- `member`: this claim's name for its entry (unique; the count of tokens is appended).
local function save_bucket(bucket, member, t)
  if bucket.taken > 0 then
    redis.call('ZADD', bucket.key, t, member .. ':' .. bucket.taken)
  elseif not bucket.dirty then
    return
  end
  redis.pcall('SET', bucket.out_key, bucket.stored + bucket.taken)
end

-- A claimed-for task over its type's rate: SCHEDULED until `due` µs, nothing counted. It was
-- popped from pending, so it is in no state set until this adds it to scheduled.
local function hold_back(b, id, due, t)
  redis.call('ZADD', b.scheduled, due, id)
  redis.call('HSET', b.tprefix .. id, 'state', 'scheduled', 'ready', seconds(due), 'since', t)
end

-- Concurrency. A queue's limit is the key <queue prefix>concurrency (a STRING count), compared
-- with its active set. A task type's limits come in claim.lua's ARGV as "<type> <n>" pairs;
-- its count is a STRING (<running prefix><type>): a claim adds the tasks it starts under the
-- limit and names the count in each one's record ('run'); every way out of ACTIVE
-- (complete_leased, and lib.lua's fail_task, release_leased and archive_corrupt, so lease
-- recovery too) takes one off and deletes 'run' in the same step. A claim reads one number.

local function queue_prefix(b)
  return string.sub(b.seq, 1, -4)
end

-- {type = n} from "<type> <n> ..." (task types have no spaces).
local function limit_table(spec)
  local found = {}
  for name, n in string.gmatch(spec or '', '([^ ]+) ([0-9]+)') do
    found[name] = tonumber(n)
  end
  return found
end

-- How many more tasks queue `b` may have ACTIVE, or nil when it has no concurrency limit.
local function queue_room(b)
  local n = tonumber(redis.pcall('GET', queue_prefix(b) .. 'concurrency'))
  if n == nil then return nil end
  return n - redis.call('ZCARD', b.active)
end

-- How many tasks started under the running count `key` are ACTIVE (0 for no key, or a key
-- that holds no count).
local function running_count(key)
  local n = tonumber(redis.pcall('GET', key))
  if n == nil or n < 0 then return 0 end
  return n
end

-- A task whose type is at its concurrency limit (`n`, counted in the running count `run`):
-- SCHEDULED until `due` (µs), marked held, and listed in the queue's held set of its type at
-- its old pending score `score`. The queue's slotwait hash names the types its held tasks wait
-- for, with their limit and running count, for slot_free.
local function hold_for_slot(b, id, score, task_type, due, t, n, run)
  redis.call('HSET', queue_prefix(b) .. 'slotwait', task_type, n .. ' ' .. run)
  redis.call('ZADD', b.scheduled, due, id)
  redis.call('HSET', b.tprefix .. id, 'state', 'scheduled', 'ready', seconds(due), 'since', t,
    'held', '1')
  redis.call('ZADD', queue_prefix(b) .. 'held:' .. task_type, score, id)
end

-- Move up to `free` held tasks of `task_type` back to pending at their old scores (the front).
-- An entry whose task is no longer held (run, deleted or archived since) is just dropped.
local function unhold(b, task_type, free, t)
  local key = queue_prefix(b) .. 'held:' .. task_type
  while free > 0 do
    local head = redis.pcall('ZRANGE', key, 0, 0, 'WITHSCORES')
    if head.err or #head == 0 then return end
    local id, score = head[1], head[2]
    redis.call('ZREM', key, id)
    local tkey = b.tprefix .. id
    local rec = redis.pcall('HMGET', tkey, 'state', 'held')
    if not rec.err and rec[1] == 'scheduled' and rec[2] == '1' then
      redis.call('ZADD', b.pending, score, id)
      redis.call('HSET', tkey, 'state', 'pending', 'rscore', score, 'since', t,
        'ready', seconds(tonumber(score)))
      redis.call('HDEL', tkey, 'held')
      redis.call('ZREM', b.scheduled, id)
      free = free - 1
    end
  end
end

-- complete.lua and fail.lua, after a task of queue `b` left ACTIVE: when the queue was at its
-- concurrency limit, or tasks of it are held for a slot, its slot may let one start: wake idle
-- workers (they claim at once, instead of at their next poll). A queue's limit and held tasks
-- are read once per script run: a queue with neither costs nothing more per completion, one
-- with a limit one ZCARD.
local watched = {}  -- per queue prefix: {limit or false, any task held}

local function slot_freed(b)
  local prefix = queue_prefix(b)
  local w = watched[prefix]
  if w == nil then
    w = {false, false}
    if redis.call('EXISTS', prefix .. 'concurrency', prefix .. 'slotwait') > 0 then
      w = {tonumber(redis.pcall('GET', prefix .. 'concurrency')) or false,
           redis.call('EXISTS', prefix .. 'slotwait') == 1}
    end
    watched[prefix] = w
  end
  if w[2] or (w[1] and redis.call('ZCARD', b.active) == w[1] - 1) then wake(b) end
end

-- Complete a leased task of queue `b` (the caller checked the lease and that the completion may
-- be written): COMPLETED with `result` (nil: none kept) when it is retained, else deleted; its
-- unique lock released, a client waiting on its result woken, and its concurrency slot freed.
-- `rec` is its record's {retention, unique_key, waited, run} when the caller read them
-- already (nil: read here). Counting it in the queue's totals is the caller's (complete.lua
-- adds its counts once per call). With `freed` (a table: running count -> slots), the slot is
-- added there for the caller to give back in one INCRBY per count before the script ends.
local completed_at = {}  -- {time, its int_text}: one call's completions share their time

local function complete_leased(b, id, t, result, rec, freed)
  local tkey = b.tprefix .. id
  if rec == nil then
    rec = redis.call('HMGET', tkey, 'retention', 'unique_key', 'waited', 'run')
  end
  release_unique(b, id, rec[2])
  local run = run_key(b, rec[4])  -- its slot (see free_run)
  if run and freed then
    freed[run] = (freed[run] or 0) + 1
  elseif run then
    redis.pcall('INCRBY', run, -1)
  end
  local retention = tonumber(rec[1]) or 0
  if retention > 0 then
    if completed_at[1] ~= t then completed_at[1], completed_at[2] = t, int_text(t) end
    local t_text = completed_at[2]
    -- Into completed before out of active (lib.lua: a task is always in one state set).
    redis.call('ZADD', b.completed, t_text, id)
    redis.call('HSET', tkey, 'state', 'completed', 'completed_at', t_text, 'since', t_text)
    redis.call('HDEL', tkey, 'lease', 'run')
    if result then redis.call('HSET', tkey, 'result', result) end
    redis.pcall('ZADD', b.expiry, int_text(t + math.floor(retention * 1000000)), id)
    if rec[3] then wake_result(b, id) end
  else
    redis.call('DEL', tkey)
  end
  redis.call('ZREM', b.active, id)
  slot_freed(b)
end

-- Whether a task of queue `b` held for a slot could take one now (peek.lua: an idle wait then
-- claims at once, so a slot freed while no one waited is never missed). With `tidy`, types
-- with no task held any more are dropped from the slotwait hash.
local function slot_free(b, tidy)
  local key = queue_prefix(b) .. 'slotwait'
  local waits = redis.pcall('HGETALL', key)
  if waits.err then return false end
  local free = false
  for i = 1, #waits, 2 do
    local n, run = string.match(waits[i + 1], '^([0-9]+) (.+)$')
    local held_key = queue_prefix(b) .. 'held:' .. waits[i]
    local held = redis.call('ZCARD', held_key)
    if tidy and held == 0 then
      redis.call('HDEL', key, waits[i])
    elseif held > 0 and n and running_count(run) < tonumber(n) then
      free = true
    end
  end
  return free
end

-- Whether queue `b` is at its concurrency limit (peek.lua: an idle wait does not wake for it).
local function queue_full(b)
  local room = queue_room(b)
  return room ~= nil and room <= 0
end
