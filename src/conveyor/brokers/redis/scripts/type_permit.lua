-- type_permit.lua: Redis Cluster, a task type's fleet-wide limits in the type's own slot: a
-- permit per ACTIVE task started under its concurrency limit, and its rate bucket.
-- KEYS:    [1] the permits (ZSET, member "<task id>:<token>", score = the lease's expiry µs; a
--          permit whose lease has lapsed counts no more), [2] the rate bucket and [3] its count
--          of tokens out (limits.lua's open_bucket), [4] the queues with tasks held for a permit
--          (HASH queue -> "<µs until which they may be held> <name of the last 'take' that
--          held some>"); all tagged by the type.
-- ARGV:    [1] operation:
--          'take': [2] the claimed tasks' lease expiry (µs), [3] the concurrency limit ('' for
--            none), [4] the rate "<count> <period µs>" ('' for none), [5] the longest hold for
--            a permit (µs), [6] the tasks' queue, [7] a unique name for this call's bucket
--            entry, then the claimed tasks' members ("<id>:<token>"), in claim order;
--          'extend': [2] the new lease expiry (µs), then members: the permits still held move;
--          'add': then pairs member, lease expiry (µs): permits for tasks already running
--            (one already there is kept);
--          'release': [2] the concurrency limit ('' for none), then members to drop (none: just
--            look for room);
--          'forget': then pairs queue, waiting entry as 'release' returned it: queues found
--            deleted or empty (permit_hold.lua 'unhold') leave the waiting set, unless a 'take'
--            held tasks of theirs since (the entry changed).
-- Returns: 'take': one number per member: 0 granted; else the µs time it may start, positive
--          when its rate holds it back, negative when its concurrency limit does (held until
--          then at most: a permit may come back sooner);
--          'release': {free permits, then pairs queue, waiting entry for the queues with tasks
--          held for one} ({0} when none is free, or no limit); 'extend', 'add' and 'forget':
--          how many permits moved or were added, or queues left the waiting set.

local op = ARGV[1]

-- A waiting entry's µs time (the numbers alone of older entries read the same).
local function waiting_until(entry)
  return tonumber(string.match(entry or '', '^%-?[0-9]+')) or 0
end
local t = now()
local permits = KEYS[1]

-- Permits whose lease has lapsed count no more (their worker stopped extending them: a crash,
-- or a release that never came): the slot is back at the lease's expiry.
local function drop_lapsed()
  local lapsed = redis.call('ZRANGEBYSCORE', permits, '-inf', '(' .. int_text(t))
  for c = 1, #lapsed, ZADD_CHUNK do
    redis.call('ZREM', permits, unpack(lapsed, c, math.min(c + ZADD_CHUNK - 1, #lapsed)))
  end
end

if op == 'take' then
  local n = tonumber(ARGV[3])
  local count, period = string.match(ARGV[4], '^([0-9]+) ([0-9]+)$')
  local bucket = nil
  if count then
    bucket = open_bucket(KEYS[2], KEYS[3], {tonumber(count), tonumber(period)}, t)
  end
  local running = 0
  if n then
    drop_lapsed()
    running = redis.call('ZCARD', permits)
  end
  local out, granted, ahead, slot_held = {}, {}, 0, false
  for i = 8, #ARGV do
    local member = ARGV[i]
    local due = nil
    if n and running >= n then
      due = false
    elseif bucket then
      due = take_token(bucket, t, ahead)
      if due then ahead = ahead + 1 end
    end
    if due == nil then
      out[#out + 1] = 0
      if n then
        running = running + 1
        granted[#granted + 1] = ARGV[2]
        granted[#granted + 1] = member
      end
    elseif due then
      out[#out + 1] = due
    else
      out[#out + 1] = false
      slot_held = true
    end
  end
  for c = 1, #granted, ZADD_CHUNK do
    redis.call('ZADD', permits, unpack(granted, c, math.min(c + ZADD_CHUNK - 1, #granted)))
  end
  if bucket then save_bucket(bucket, ARGV[7], t) end
  if slot_held then
    -- Held until the first permit may lapse (a crashed worker's slot is back then), at most
    -- the longest hold; a release moves them back sooner (the broker, through KEYS[4]).
    local until_ = t + tonumber(ARGV[5])
    local first = redis.call('ZRANGE', permits, 0, 0, 'WITHSCORES')
    if #first == 2 then until_ = math.min(until_, tonumber(first[2]) + 1) end
    -- Always rewritten, named by this call: a 'forget' that read the entry before leaves it.
    local was = redis.call('HGET', KEYS[4], ARGV[6])
    if was then until_ = math.max(until_, waiting_until(was)) end
    redis.call('HSET', KEYS[4], ARGV[6], int_text(until_) .. ' ' .. ARGV[7])
    for i = 1, #out do
      if out[i] == false then out[i] = -until_ end
    end
  end
  return out
elseif op == 'extend' then
  local moved = 0
  for i = 3, #ARGV do
    moved = moved + redis.call('ZADD', permits, 'XX', 'CH', ARGV[2], ARGV[i])
  end
  return moved
elseif op == 'add' then
  local added = 0
  for i = 2, #ARGV - 1, 2 do
    added = added + redis.call('ZADD', permits, 'NX', ARGV[i + 1], ARGV[i])
  end
  return added
elseif op == 'release' then
  for c = 3, #ARGV, ZADD_CHUNK do
    redis.call('ZREM', permits, unpack(ARGV, c, math.min(c + ZADD_CHUNK - 1, #ARGV)))
  end
  local n = tonumber(ARGV[2])
  if n == nil then return {0} end
  drop_lapsed()
  local free = n - redis.call('ZCARD', permits)
  if free <= 0 then return {0} end
  local out = {free}
  local waiting = redis.call('HGETALL', KEYS[4])
  for i = 1, #waiting, 2 do
    if waiting_until(waiting[i + 1]) < t then
      redis.call('HDEL', KEYS[4], waiting[i])  -- its held tasks are due by themselves now
    else
      out[#out + 1] = waiting[i]
      out[#out + 1] = waiting[i + 1]
    end
  end
  return out
elseif op == 'forget' then
  local forgotten = 0
  for i = 2, #ARGV - 1, 2 do
    if redis.call('HGET', KEYS[4], ARGV[i]) == ARGV[i + 1] then
      forgotten = forgotten + redis.call('HDEL', KEYS[4], ARGV[i])
    end
  end
  return forgotten
end
return redis.error_reply('type_permit.lua: unknown operation')
