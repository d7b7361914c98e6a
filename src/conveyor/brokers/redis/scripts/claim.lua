-- claim.lua: lease up to `limit` ready tasks, trying the queues in KEYS order.
-- KEYS:    one 13-key block per queue, in the caller's priority order (see lib.lua).
-- ARGV:    [1] limit, [2] lease length in µs.
-- Returns: {now_us, lease_expiry_us, corrupt, claimed...}; each claimed task is
--          {queue_block_index, id, token, values of CLAIM_FIELDS (false where absent)}.
--          Corrupt records met on the way are archived with a reason and listed in `corrupt`
--          as {queue_block_index, id, reason} (so the caller can log them), not claimed.

local limit = tonumber(ARGV[1])
local t = now()
local expiry = t + tonumber(ARGV[2])
local corrupt = {}
local out = {t, expiry, corrupt}
local claimed = 0

-- Move due SCHEDULED/RETRY tasks to pending, scored by their due time. Promoting `want` of each
-- is enough: every task popped below is then due no later than any task left behind.
local function promote(b, src, want)
  local due = redis.call('ZRANGE', src, '-inf', t, 'BYSCORE', 'LIMIT', 0, want, 'WITHSCORES')
  for j = 1, #due, 2 do
    local id = due[j]
    redis.call('ZREM', src, id)
    redis.call('ZADD', b.pending, due[j + 1], id)
    redis.call('HSET', b.tprefix .. id, 'state', 'pending', 'rscore', due[j + 1])
  end
end

-- Why a pending record cannot be run, or nil when it is sound.
local function corruption(rec, tkey)
  if rec[1] == false and redis.call('EXISTS', tkey) == 0 then return 'record missing' end
  if rec[2] ~= 'pending' then return 'bad state ' .. tostring(rec[2]) end
  if rec[3] == false or rec[3] == '' then return 'missing type' end
  if rec[4] == false then return 'missing payload' end
  if rec[5] ~= 'json' and rec[5] ~= 'bytes' then return 'bad encoding' end
  if tonumber(rec[6]) == nil then return 'bad max_retry' end
  if tonumber(rec[7]) == nil then return 'bad retried' end
  return nil
end

-- `token` was minted for this task (see claim_from); `leased` collects the active-set entries.
-- The record fields a claim returns, in this order (records.CLAIM_FIELDS must match): the
-- first seven are the ones checked for corruption. One HMGET reads what both need.
local CLAIM_FIELDS = {'enqueued_at', 'state', 'type', 'payload', 'encoding', 'max_retry',
                      'retried', 'timeout', 'deadline', 'retention', 'unique_key', 'error',
                      'failed_at'}

local function take(b, qi, id, token, leased)
  local tkey = b.tprefix .. id
  local rec = redis.call('HMGET', tkey, unpack(CLAIM_FIELDS))
  local bad = corruption(rec, tkey)
  if bad == nil then
    redis.call('HSET', tkey, 'state', 'active', 'token', token, 'lease', expiry, 'since', t)
    leased[#leased + 1] = expiry
    leased[#leased + 1] = id
    rec[2] = 'active'
    out[#out + 1] = {qi, id, token, rec}
    claimed = claimed + 1
  elseif bad ~= 'record missing' and rec[2] ~= 'pending' and STATE_SET[rec[2]] then
    -- A stray entry whose record lives in another state's set: drop only the stray entry.
    redis.log(redis.LOG_WARNING, 'conveyor: dropped a stray pending entry')
  else
    corrupt[#corrupt + 1] = {qi, id, bad}
    redis.call('HSET', tkey, 'state', 'archived', 'error', 'corrupt record: ' .. bad,
      'failed_at', t, 'since', t)
    redis.call('HDEL', tkey, 'lease')
    redis.call('ZADD', b.archived, t, id)
  end
end

-- Loops only when corrupt or stray entries were skipped, so each pass makes progress.
local function claim_from(qi)
  local b = block(qi)
  while claimed < limit do
    local want = limit - claimed
    promote(b, b.scheduled, want)
    promote(b, b.retry, want)
    local ids = redis.call('ZPOPMIN', b.pending, want)
    if #ids == 0 then return end
    -- One INCRBY mints every token of this batch, one ZADD (per chunk) leases them: two
    -- commands per batch instead of two per task. A skipped corrupt entry leaves a gap in the
    -- tokens, which only need to be unique and increasing.
    local first = redis.call('INCRBY', b.seq, #ids / 2) - #ids / 2
    local leased = {}
    for j = 1, #ids, 2 do
      take(b, qi, ids[j], first + (j + 1) / 2, leased)
    end
    for c = 1, #leased, ZADD_CHUNK do
      redis.call('ZADD', b.active, unpack(leased, c, math.min(c + ZADD_CHUNK - 1, #leased)))
    end
  end
end

for qi = 1, #KEYS / BLOCK do
  if claimed >= limit then break end
  if redis.call('EXISTS', block(qi).paused) == 0 then
    claim_from(qi)
  end
end
return out
