-- claim.lua: lease up to `limit` ready tasks, trying the queues in KEYS order.
-- KEYS:    one 13-key block per queue, in the caller's priority order (see lib.lua); then,
--          optionally, the caller's receipt key (keys.claim_receipt).
-- ARGV:    [1] limit, [2] lease length in µs, [3] this claim's id (with the receipt key),
--          [4] the rate buckets' key prefix (the bucket of a type is prefix .. type) and [5] the
--          rate limits, as limits.lua's rate_table reads them ('' for none): a task over its
--          type's rate is held back (limits.lua's hold_back), not claimed; [6] the running
--          counts' key prefix and [7] the task types' concurrency limits (limits.lua's
--          limit_table; '' for none), [8] how long (µs) a task held for a slot of its type
--          stays SCHEDULED at most, [9] the prefix of the buckets' counts of tokens out (the
--          count of a type's is prefix .. type). A queue at its concurrency limit is passed
--          over. [10] the workflow records' key prefix ("<ns>:wf:"), '' for none (Cluster,
--          where they live in other slots): each claimed workflow step then also gets its
--          workflow's record (WF_FIELDS), read in this script, for the step's inputs.
--          When anything is claimed, the receipt is overwritten with the id and the leases,
--          expiring with them: should the reply be lost, unclaim.lua gives the tasks back.
-- Returns: {now_us, lease_expiry_us, corrupt, claimed...}; each claimed task is
--          {queue_block_index, id, token, values of CLAIM_FIELDS (false where absent)}, and for
--          a workflow step with ARGV[10] set, a fifth: its workflow's values of WF_FIELDS, or 0
--          when an earlier entry carries them (a workflow's record is sent once per claim).
--          Corrupt records met on the way are archived with a reason and listed in `corrupt`
--          as {queue_block_index, id, reason} (so the caller can log them), not claimed.

local limit = tonumber(ARGV[1])
local t = now()
run_when_full(block(1))
local expiry = t + tonumber(ARGV[2])
-- Per-task writes take text, formatted once here (see lib.lua's int_text).
local t_text, expiry_text = int_text(t), int_text(expiry)
local corrupt = {}
local out = {t, expiry, corrupt}
local claimed = 0
local receipt_words = {ARGV[3]}  -- "<block> <id> <token>" per claimed task
local rates = rate_table(ARGV[5])
local held = {}  -- per type: tasks this run held back
local held_total = 0
-- Holds per run stay bounded, so a long queue of held-back tasks never makes one long script:
-- the next claim carries on.
local MAX_HOLDS = 1000
local buckets = {}  -- per rate-limited type: its bucket, read once by this run
local max_active = limit_table(ARGV[7])
local running = {}  -- per type with a concurrency limit: its ACTIVE tasks, counted once per run

local function running_of(task_type)
  if running[task_type] == nil then
    running[task_type] = running_count(ARGV[6] .. task_type)
  end
  return running[task_type]
end

-- Whether a sound popped task (pending score `score`) must wait: its type is at its concurrency
-- limit, or over its rate. Then it is now SCHEDULED.
local function over_limit(b, id, score, task_type)
  local n = max_active[task_type]
  if n ~= nil and running_of(task_type) >= n then
    held_total = held_total + 1
    hold_for_slot(b, id, score, task_type, t + tonumber(ARGV[8]), t, n, ARGV[6] .. task_type)
    return true
  end
  local rate = rates[task_type]
  if rate == nil then return false end
  if buckets[task_type] == nil then
    buckets[task_type] = open_bucket(ARGV[4] .. task_type, ARGV[9] .. task_type, rate, t)
      or false
  end
  if not buckets[task_type] then return false end
  local due = take_token(buckets[task_type], t, held[task_type] or 0)
  if due == nil then return false end
  held[task_type] = (held[task_type] or 0) + 1
  held_total = held_total + 1
  hold_back(b, id, due, t)
  return true
end

-- over_limit, and a task that may start counts as running from now on.
local function over_any(b, id, score, task_type)
  if over_limit(b, id, score, task_type) then return true end
  if max_active[task_type] ~= nil then running[task_type] = running[task_type] + 1 end
  return false
end

-- Move due SCHEDULED/RETRY tasks to pending, scored by their due time. Promoting `want` of each
-- is enough: every task popped below is then due no later than any task left behind. The record
-- is written last, through pcall: a key of the wrong type is left for take to archive.
local function promote(b, src, want)
  local due = redis.call('ZRANGEBYSCORE', src, '-inf', t_text, 'WITHSCORES', 'LIMIT', '0',
    int_text(want))
  for j = 1, #due, 2 do
    local id = due[j]
    redis.call('ZADD', b.pending, due[j + 1], id)
    redis.call('ZREM', src, id)
    redis.pcall('HSET', b.tprefix .. id, 'state', 'pending', 'rscore', due[j + 1])
  end
end

-- True when `s` is strict UTF-8 (as Python's bytes.decode takes it: no overlong forms, no
-- surrogates, nothing past U+10FFFF).
local function utf8(s)
  if not string.find(s, '[\128-\255]') then return true end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    if c < 128 then
      i = i + 1
    else
      local len, lo, hi = 2, 128, 191
      if c >= 194 and c <= 223 then len = 2
      elseif c == 224 then len, lo = 3, 160
      elseif c == 237 then len, hi = 3, 159
      elseif c >= 225 and c <= 239 then len = 3
      elseif c == 240 then len, lo = 4, 144
      elseif c >= 241 and c <= 243 then len = 4
      elseif c == 244 then len, hi = 4, 143
      else return false end
      if i + len - 1 > n then return false end
      local c2 = string.byte(s, i + 1)
      if c2 < lo or c2 > hi then return false end
      for k = i + 2, i + len - 1 do
        local ck = string.byte(s, k)
        if ck < 128 or ck > 191 then return false end
      end
      i = i + len
    end
  end
  return true
end

-- The ranges Python decodes (records.decode_record): datetimes in years 1..9999 (a day's margin
-- each side), as seconds or µs, and durations within timedelta's range.
local MIN_S, MAX_S = -62135510400, 253402214400
local MIN_US, MAX_US = MIN_S * 1000000, MAX_S * 1000000
local MAX_SPAN = 86000000000000

local function number_in(s, lo, hi)
  local v = tonumber(s)
  return v ~= nil and v >= lo and v <= hi  -- false for nan
end

-- Why a pending record cannot be run, or nil when it is sound. Checks are as strict as the
-- commands and the decoding that follow (an HINCRBY on retried or crashes, Python's datetime,
-- timedelta and UTF-8), so a record that passes never breaks a later step.
local function corruption(id, rec, tkey)
  local unusable = unreadable(rec, tkey, rec[1])
  if unusable then return unusable end
  if rec[2] ~= 'pending' then return 'bad state ' .. tostring(rec[2]) end
  if rec[3] == false or rec[3] == '' then return 'missing type' end
  if rec[4] == false then return 'missing payload' end
  if rec[5] ~= 'json' and rec[5] ~= 'bytes' then return 'bad encoding' end
  if not is_int(rec[6]) then return 'bad max_retry' end
  if not is_int(rec[7]) then return 'bad retried' end
  if rec[1] and not number_in(rec[1], MIN_US, MAX_US) then return 'bad enqueued_at' end
  if rec[8] and not number_in(rec[8], -MAX_SPAN, MAX_SPAN) then return 'bad timeout' end
  if rec[9] and not number_in(rec[9], MIN_S, MAX_S) then return 'bad deadline' end
  if rec[10] and not number_in(rec[10], -MAX_SPAN, MAX_SPAN) then return 'bad retention' end
  if rec[11] and not utf8(rec[11]) then return 'bad unique_key' end
  if rec[13] and not number_in(rec[13], MIN_US, MAX_US) then return 'bad failed_at' end
  if rec[15] and not is_int(rec[15]) then return 'bad crashes' end
  if #id > 255 or not string.find(id, '^[%w_.:%-]+$') then return 'bad id' end
  return nil
end

-- The record fields a claim returns, in this order (records.CLAIM_FIELDS must match): the
-- first seven are the ones checked for corruption. One HMGET reads what both need, and
-- 'crashes' (checked, not returned; last, so dropping it leaves no hole in the reply).
local CLAIM_FIELDS = {'enqueued_at', 'state', 'type', 'payload', 'encoding', 'max_retry',
                      'retried', 'timeout', 'deadline', 'retention', 'unique_key', 'error',
                      'failed_at', 'headers', 'crashes'}

-- Read and check one popped task: its record when sound (appended to `good`), else nil after
-- archiving it (corrupt) or dropping a stray entry. Writes nothing to a sound record.
local function check(b, qi, id, good)
  local tkey = b.tprefix .. id
  local rec = redis.pcall('HMGET', tkey, unpack(CLAIM_FIELDS))
  local bad = corruption(id, rec, tkey)
  if bad == nil then
    rec[15] = nil
    good[#good + 1] = rec
    return rec
  elseif not rec.err and bad ~= 'record missing' and rec[2] ~= 'pending' and STATE_SET[rec[2]] then
    -- A stray entry whose record lives in another state's set: drop only the stray entry.
    redis.log(redis.LOG_WARNING, 'conveyor: dropped a stray pending entry')
  else
    corrupt[#corrupt + 1] = {qi, id, bad}
    archive_corrupt(b, id, t, bad, nil)
  end
  return nil
end

-- Give popped tasks back to pending at their old scores (`ids` as ZPOPMIN returns them, `which`
-- their positions in it), then raise `err`: a queue key of the wrong type stops the claim
-- without losing the batch.
local function give_back(b, ids, which, err)
  for _, j in ipairs(which) do
    redis.call('ZADD', b.pending, ids[j + 1], ids[j])
    redis.pcall('ZREM', b.active, ids[j])
  end
  error(err)
end

-- Loops only when corrupt or stray entries were skipped, so each pass makes progress.
local function claim_from(qi)
  local b = block(qi)
  -- Tasks held for a slot of their type now free go back to the front first.
  for task_type, n in pairs(max_active) do
    if redis.call('EXISTS', queue_prefix(b) .. 'held:' .. task_type) == 1 then
      running[task_type] = running_count(ARGV[6] .. task_type)
      local free = n - running[task_type]
      if free > 0 then unhold(b, task_type, free, t) end
    end
  end
  slot_free(b, true)
  local room = queue_room(b) or limit
  while claimed < limit and held_total < MAX_HOLDS and room > 0 do
    local want = math.min(limit - claimed, room)
    promote(b, b.scheduled, want)
    promote(b, b.retry, want)
    local ids = redis.call('ZPOPMIN', b.pending, int_text(want))
    if #ids == 0 then return end
    -- One INCRBY mints every token of this batch, one ZADD (per chunk) leases them: two
    -- commands per batch instead of two per task. A skipped corrupt entry leaves a gap in the
    -- tokens, which only need to be unique and increasing.
    local n = #ids / 2
    local first = redis.pcall('INCRBY', b.seq, int_text(n))
    if type(first) == 'table' then
      local all = {}
      for j = 1, #ids, 2 do all[#all + 1] = j end
      give_back(b, ids, all, first)
    end
    first = first - n
    -- Check every record first, then add the sound ones to the active set, then mark their
    -- records active: no step after the first write to a sound task can fail, so none is ever
    -- left marked active outside the active set, or popped and in no set.
    local good, at, leased, started = {}, {}, {}, {}
    for j = 1, #ids, 2 do
      local rec = check(b, qi, ids[j], good)
      if rec and over_any(b, ids[j], ids[j + 1], rec[3]) then
        good[#good] = nil
      elseif rec then
        at[#at + 1] = j
        leased[#leased + 1] = expiry_text
        leased[#leased + 1] = ids[j]
      end
    end
    for c = 1, #leased, ZADD_CHUNK do
      local last = math.min(c + ZADD_CHUNK - 1, #leased)
      local r = redis.pcall('ZADD', b.active, unpack(leased, c, last))
      if type(r) == 'table' then give_back(b, ids, at, r) end
    end
    local qi_text = tostring(qi)
    for k, j in ipairs(at) do
      local id, token, rec = ids[j], first + (j + 1) / 2, good[k]
      local token_text = int_text(token)
      local tkey = b.tprefix .. id
      if max_active[rec[3]] ~= nil then
        -- Counted in its type's running count, which every way out of ACTIVE finds by 'run'.
        local run = ARGV[6] .. rec[3]
        redis.call('HSET', tkey, 'state', 'active', 'token', token_text, 'lease', expiry_text,
          'since', t_text, 'run', run)
        started[run] = (started[run] or 0) + 1
      else
        redis.call('HSET', tkey, 'state', 'active', 'token', token_text, 'lease', expiry_text,
          'since', t_text)
      end
      rec[2] = 'active'
      out[#out + 1] = {qi, id, token, rec}
      receipt_words[#receipt_words + 1] = qi_text .. ' ' .. id .. ' ' .. token_text
      claimed = claimed + 1
    end
    for run, k in pairs(started) do redis.pcall('INCRBY', run, k) end
    room = room - #at
  end
end

local blocks_n = math.floor(#KEYS / BLOCK)
for qi = 1, blocks_n do
  if claimed >= limit then break end
  if redis.call('EXISTS', block(qi).paused) == 0 then
    claim_from(qi)
  end
end
for _, bucket in pairs(buckets) do
  if bucket then save_bucket(bucket, ARGV[3] or int_text(t), t) end
end
-- The workflow record fields a claimed step gets (workflow_load._FIELDS must match): one
-- HMGET per workflow, whatever the number of its steps claimed.
if ARGV[10] and ARGV[10] ~= '' then
  local WF_FIELDS = {'state', 'created_at', 'finished_at', 'error', 'failed_task', 'retention',
                     'version', 'states'}
  local records = {}
  for k = 4, #out do
    local wid = string.match(out[k][2], '^wf%.([%w%-]+)%.[0-9]+$')
    if wid and records[wid] then
      out[k][5] = 0  -- the same workflow's record as an earlier entry's
    elseif wid then
      records[wid] = true
      out[k][5] = redis.call('HMGET', ARGV[10] .. '{' .. wid .. '}', unpack(WF_FIELDS))
    end
  end
end
local receipt = KEYS[blocks_n * BLOCK + 1]
if receipt and claimed > 0 then
  local ttl_ms = math.max(1, math.ceil(tonumber(ARGV[2]) / 1000))
  redis.call('SET', receipt, table.concat(receipt_words, ' '), 'PX', int_text(ttl_ms))
end
return out
