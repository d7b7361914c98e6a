-- lib.lua: helpers prepended to every other script (constant text, no data).
-- KEYS:    none of its own; scripts take queue key blocks of 13 keys each, in this order:
--          pending, scheduled, retry, active, archived, completed, expiry, seq, wake, paused, stats,
--          task-record prefix, unique-lock prefix (the prefixes share the queue's hash tag).
-- ARGV:    none of its own.
-- Returns: nothing; defines local helpers only.
-- Times are server microseconds since the epoch; ZSET scores hold them exactly (< 2^53).
-- Commands are those of Redis 6.0 (ZRANGEBYSCORE, not 6.2's ZRANGE ... BYSCORE).

local BLOCK = 13
-- Tokens pushed per wake-up: enough for several idle workers blocked on one queue to all wake;
-- peek.lua clears leftovers, so stale tokens never make a worker spin.
local WAKE_TOKENS = 8
local WAKE_KEEP = '7'  -- LTRIM's last index: WAKE_TOKENS - 1, as text (see int_text)

local blocks = {}  -- built once per block and call: batch loops ask for them per message

local function block(i)
  local found = blocks[i]
  if found then return found end
  local o = (i - 1) * BLOCK
  found = {
    pending = KEYS[o + 1], scheduled = KEYS[o + 2], retry = KEYS[o + 3], active = KEYS[o + 4],
    archived = KEYS[o + 5], completed = KEYS[o + 6], expiry = KEYS[o + 7], seq = KEYS[o + 8],
    wake = KEYS[o + 9], paused = KEYS[o + 10], stats = KEYS[o + 11], tprefix = KEYS[o + 12],
    uprefix = KEYS[o + 13],
  }
  blocks[i] = found
  return found
end

-- Server time: the only clock that decides leases, due times and recovery.
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Redis at maxmemory (noeviction) refuses a script at its first write of a kind that may need
-- memory, and lets a script that has written already run to its end. Every step of a task
-- under a lease (claim, renewal, completion, retry, archive, release) and recovery move or
-- rewrite what is stored and barely grow it, and a full Redis must still be drained (a queue of
-- scheduled tasks alone would otherwise never be claimed, and a failure that cannot be recorded
-- would come back as a crash): they start with a write that needs no memory and changes nothing
-- (removing a member no task id can be; not replicated). New tasks, pauses and the inspector's
-- changes wait for memory.
local function run_when_full(b)
  if b.active then redis.pcall('ZREM', b.active, '') end
end

-- Exact decimal seconds for a microsecond time (tostring of the float would round to 14 digits;
-- each integer part alone prints exactly).
local function seconds(us)
  local frac = tostring(us % 1000000)
  return tostring(math.floor(us / 1000000)) .. '.' .. string.rep('0', 6 - #frac) .. frac
end

-- Daily ('p:<day>', 'f:<day>') and per-minute ('pm:<minute>', 'fm:<minute>') totals, UTC days
-- and minutes since the epoch.
local function count_done(b, us, failed)
  local day = math.floor(us / 86400000000)
  local minute = math.floor(us / 60000000)
  redis.call('HINCRBY', b.stats, 'p:' .. day, 1)
  redis.call('HINCRBY', b.stats, 'pm:' .. minute, 1)
  if failed then
    redis.call('HINCRBY', b.stats, 'f:' .. day, 1)
    redis.call('HINCRBY', b.stats, 'fm:' .. minute, 1)
  end
end

local function wake(b)
  if redis.call('LLEN', b.wake) < WAKE_TOKENS then
    local tokens = {}
    for i = 1, WAKE_TOKENS do tokens[i] = '1' end
    redis.call('LPUSH', b.wake, unpack(tokens))
    redis.call('LTRIM', b.wake, '0', WAKE_KEEP)
  end
end

-- Score for a task becoming ready now (`t` µs): its ready time, nudged just behind the last
-- pending task when that one is not earlier, so a batch stored within one microsecond keeps its
-- enqueue order (ZSET ties would otherwise sort by id). The nudge is microseconds.
local function tail_score(b, t)
  local last = redis.call('ZRANGE', b.pending, '-1', '-1', 'WITHSCORES')
  if last[2] ~= nil and tonumber(last[2]) >= t then
    return tonumber(last[2]) + 1
  end
  return t
end

-- Make a task PENDING at `score`; `ready` (µs) is the ready time the inspector shows.
local function to_pending(b, id, score, ready, since)
  redis.call('ZADD', b.pending, score, id)
  redis.call('HSET', b.tprefix .. id, 'state', 'pending', 'ready', seconds(ready),
    'rscore', score, 'since', since)
end

-- Release the unique lock only if it still belongs to this task.
-- (A lock key of another type is left alone: GET's error is no match.)
local function release_unique(b, id, ukey)
  if type(ukey) == 'string' and ukey ~= '' then
    local lock = b.uprefix .. ukey
    if redis.pcall('GET', lock) == id then
      redis.call('DEL', lock)
    end
  end
end

local STATE_SET = {pending = 'pending', scheduled = 'scheduled', retry = 'retry',
                   active = 'active', archived = 'archived', completed = 'completed'}

-- Remove a task id from the set of its current state (and the retention index).
local function unlink(b, id, state)
  local set = STATE_SET[state]
  if set then
    redis.call('ZREM', b[set], id)
  end
  if state == 'completed' then
    redis.call('ZREM', b.expiry, id)
  end
end

-- A message arrives as one entry of a JSON array (decoded with cjson; all strings except the
-- block index), its payload as a separate ARGV entry so bytes pass untouched:
--   {block index, id, type, encoding, max_retry, timeout, deadline, retention, unique_key,
--    unique_ttl_ms ('' = for ever), process_at ('' or "<µs ceiling> <exact seconds>"),
--    process_in_us}; '' marks an absent value.

-- nil when the message can be stored, else 'conflict' or 'duplicate'. `seen` tracks ids and
-- unique keys earlier in the same batch; a lock held by `owner` (a completing task) is free.
-- `absent` is true when the caller already knows no record of the batch exists (one EXISTS
-- over all of them is much cheaper than one per message).
local function check_message(m, seen, owner, absent)
  local b = block(m[1])
  local tkey = b.tprefix .. m[2]
  if seen[tkey] or (not absent and redis.call('EXISTS', tkey) == 1) then
    return 'conflict'
  end
  seen[tkey] = true
  if m[9] ~= '' then
    local lock = b.uprefix .. m[9]
    if seen[lock] then
      return 'duplicate'
    end
    local holder = redis.call('GET', lock)
    if holder ~= false and holder ~= owner then
      return 'duplicate'
    end
    seen[lock] = true
  end
  return nil
end

-- Per-call state shared by store_message: queues to wake, each queue's last pending score, and
-- the pending entries not yet added (one ZADD per queue and chunk instead of one per task;
-- wake_all adds them, so every script that stores messages ends with wake_all).
local function new_batch()
  return {woken = {}, tails = {}, adds = {}}
end

-- Entries per ZADD: unpack must stay well under Lua's C stack limit (8000 values).
local ZADD_CHUNK = 1000

local function flush_pending(ctx)
  for qi, adds in pairs(ctx.adds) do
    local pending = block(qi).pending
    for first = 1, #adds, ZADD_CHUNK do
      redis.call('ZADD', pending, unpack(adds, first, math.min(first + ZADD_CHUNK - 1, #adds)))
    end
  end
  ctx.adds = {}
end

-- Like tail_score, but remembers the tail within one call instead of asking Redis each time.
local function batch_tail(ctx, qi, b, t)
  local last = ctx.tails[qi]
  if last == nil then
    local r = redis.call('ZRANGE', b.pending, '-1', '-1', 'WITHSCORES')
    last = tonumber(r[2] or -1)
  end
  local score = t
  if last >= t then score = last + 1 end
  ctx.tails[qi] = score
  return score
end

local OPTIONAL = {[6] = 'timeout', [7] = 'deadline', [8] = 'retention', [9] = 'unique_key'}

-- Numbers handed to redis.call are formatted by Redis with snprintf("%.17g"), a floating-point
-- conversion that costs more than most of the commands a task runs. int_text gives the same
-- text for a non-negative integer below 2^53 (exact as a Lua number) with arithmetic instead,
-- eight digits per string.char; anything else is returned as is, for Redis to format as before.
-- It is also how a microsecond time becomes text in a record or a string (tostring would round
-- it to 14 digits).
local MAX_EXACT = 9007199254740992

-- The eight decimal digits of integer n (0 <= n < 10^8), with leading zeros.
local function eight_digits(n)
  local d8 = n % 10
  n = (n - d8) / 10
  local d7 = n % 10
  n = (n - d7) / 10
  local d6 = n % 10
  n = (n - d6) / 10
  local d5 = n % 10
  n = (n - d5) / 10
  local d4 = n % 10
  n = (n - d4) / 10
  local d3 = n % 10
  n = (n - d3) / 10
  local d2 = n % 10
  local d1 = (n - d2) / 10
  return string.char(48 + d1, 48 + d2, 48 + d3, 48 + d4, 48 + d5, 48 + d6, 48 + d7, 48 + d8)
end

-- Integer n (0 <= n < 10^8) without leading zeros.
local function short_digits(n)
  if n < 10 then return string.char(48 + n) end
  local skip = 7
  if n >= 10000 then skip = 3 end
  local bound = 10 ^ (8 - skip)
  while n >= bound do
    skip = skip - 1
    bound = bound * 10
  end
  return string.sub(eight_digits(n), skip + 1)
end

local high_digits = {}  -- per run: floor(v / 10^8) -> its text (a call's times share theirs)

local function int_text(v)
  if v < 0 or v >= MAX_EXACT or v % 1 ~= 0 then return v end
  if v < 100000000 then return short_digits(v) end
  local lo = v % 100000000
  local hi = (v - lo) / 100000000
  local head = high_digits[hi]
  if head == nil then
    head = short_digits(hi)
    high_digits[hi] = head
  end
  return head .. eight_digits(lo)
end

-- Store one checked message at server time `t`; returns its state.
local function store_message(m, payload, t, ctx)
  local qi = m[1]
  local b = block(qi)
  local id = m[2]
  local due, due_s = 0, nil
  if m[11] ~= '' then
    local sp = string.find(m[11], ' ', 1, true)
    due = tonumber(string.sub(m[11], 1, sp - 1))
    due_s = string.sub(m[11], sp + 1)
  elseif m[12] ~= '' then
    due = t + tonumber(m[12])
  end
  -- One field list per call, refilled for each message: building a fresh table per task and
  -- handing Redis numbers to convert cost more than the HSET's own work.
  local f = ctx.fields
  if f == nil then
    f = {'type', '', 'payload', '', 'encoding', '', 'max_retry', '', 'retried', '0',
         'enqueued_at', int_text(t)}
    ctx.fields = f
  end
  f[2], f[4], f[6], f[8] = m[3], payload, m[4], m[5]
  local n = 12
  -- Optional fields (timeout, deadline, retention, unique_key) are stored only when set.
  for k = 6, 9 do
    if m[k] ~= '' then
      f[n + 1], f[n + 2] = OPTIONAL[k], m[k]
      n = n + 2
    end
  end
  local state
  if due > t then
    state = 'scheduled'
    redis.call('ZADD', b.scheduled, due, id)
    f[n + 1], f[n + 2], f[n + 3], f[n + 4] = 'state', state, 'ready', due_s or seconds(due)
  else
    state = 'pending'
    local score = batch_tail(ctx, qi, b, t)
    local adds = ctx.adds[qi]
    if adds == nil then
      adds = {}
      ctx.adds[qi] = adds
    end
    local text = int_text(score)
    adds[#adds + 1] = text
    adds[#adds + 1] = id
    -- No 'ready' field: a pending task's ready time is its enqueue time until it changes.
    f[n + 1], f[n + 2], f[n + 3], f[n + 4] = 'state', state, 'rscore', text
  end
  redis.call('HSET', b.tprefix .. id, unpack(f, 1, n + 4))
  -- Wake idle workers for scheduled tasks too: they recompute how long to sleep.
  ctx.woken[qi] = true
  if m[9] ~= '' then
    if m[10] == '' then
      redis.call('SET', b.uprefix .. m[9], id)
    elseif tonumber(m[10]) > 0 then
      redis.call('SET', b.uprefix .. m[9], id, 'PX', m[10])
    end
  end
  return state
end

-- A script that stores messages is given one key past its 13-key blocks on a standalone server:
-- the queue registry. Every queue a message goes into is then registered in the same step, so a
-- queue deleted meanwhile (by any client) is listed again the moment a task re-creates it. On
-- Cluster the registry lives in another slot, and the client registers queues itself.
local REGISTRY = nil
if #KEYS % BLOCK == 1 then REGISTRY = KEYS[#KEYS] end

-- A queue's name, from its keys: the first {...} is always the queue (see keys.py).
local function queue_name(b)
  return string.match(b.pending, '{([^}]*)}')
end

local function wake_all(ctx)
  flush_pending(ctx)
  for qi, _ in pairs(ctx.woken) do
    local b = block(qi)
    if REGISTRY then redis.call('SADD', REGISTRY, queue_name(b)) end
    wake(b)
  end
end

-- Compare-and-set check on a lease: the task must be ACTIVE under exactly this token. A record
-- key that holds no hash (WRONGTYPE) holds no lease either: the task is left in the active set,
-- where recover.lua archives it as corrupt once the lease expires.
local function holds_lease(tkey, token)
  local cur = redis.pcall('HMGET', tkey, 'state', 'token')
  return cur[1] == 'active' and cur[2] == token
end

-- A record's 'run' field (limits.lua) when it names a running count of queue `b`'s namespace,
-- <ns>:run:<type> or, on Cluster, <queue prefix>run:<type>; else nil (a record is untrusted:
-- one edited to name another key must not make a script write to it).
local runs_checked = {}  -- per queue seq key: run field -> whether it passed (once per run)

local function run_key(b, run)
  if not run then return nil end
  local checked = runs_checked[b.seq]
  if checked == nil then
    checked = {}
    runs_checked[b.seq] = checked
  end
  local ok = checked[run]
  if ok == nil then
    -- The queue prefix is "<ns>:{<queue>}:", and a namespace holds no '{' (keys.py).
    local qp = string.sub(b.seq, 1, -4)
    local at = string.find(qp, ':{', 1, true)
    ok = (at ~= nil and string.sub(run, 1, at + 4) == string.sub(qp, 1, at - 1) .. ':run:')
      or string.sub(run, 1, #qp + 4) == qp .. 'run:'
    checked[run] = ok
  end
  if ok then return run end
  return nil
end

-- A task of queue `b` leaving ACTIVE: its slot back to its type's running count (limits.lua),
-- when a claim counted it there ('run' names the count). The caller deletes 'run' in the same
-- step, so a slot is given back once.
local function free_run(b, tkey)
  local run = run_key(b, redis.call('HGET', tkey, 'run'))
  if run then redis.pcall('INCRBY', run, -1) end
end

-- Give a leased task back: PENDING at its old ready time (the front), counts unchanged. The
-- caller has checked the lease (holds_lease).
local function release_leased(b, id, t)
  local tkey = b.tprefix .. id
  local score = tonumber(redis.call('HGET', tkey, 'rscore')) or t
  -- Into pending before out of active (a task is always in one state set).
  redis.call('ZADD', b.pending, score, id)
  free_run(b, tkey)
  redis.call('HSET', tkey, 'state', 'pending', 'since', t)
  redis.call('HDEL', tkey, 'lease', 'run')
  redis.call('ZREM', b.active, id)
  wake(b)
end

-- A counter field as HINCRBY takes it: an integer in decimal that fits 64 bits ("1.0" passes
-- tonumber but not HINCRBY, so checks use this wherever an HINCRBY follows).
local function is_int(s)
  return type(s) == 'string' and #s <= 18 and string.find(s, '^%-?[0-9]+$') ~= nil
end

-- Redis keeps what a script wrote before a runtime error (no rollback), so every script orders
-- its writes to keep "in exactly one state set" true at each step: a task enters its new set
-- first and leaves the old one last, and a command that can fail on a damaged record (a read of
-- a key of the wrong type, HINCRBY on a non-integer) runs through redis.pcall, before any write,
-- its error handled as a corrupt record.

-- Why a record read through pcall (`rec`, an HMGET reply) cannot be used at all, or nil: its key
-- holds no hash, or there is no key (`probe`, a field every record has, came back empty).
local function unreadable(rec, tkey, probe)
  if rec.err then return 'not a hash (' .. redis.call('TYPE', tkey)['ok'] .. ')' end
  if probe == false and redis.call('EXISTS', tkey) == 0 then return 'record missing' end
  return nil
end

-- Archive a task whose record is damaged, with the reason, and take it out of the state set
-- `from` (a STATE_SET name, or nil when the caller already removed it, e.g. ZPOPMIN). A key that
-- holds no hash is replaced by one: its old value is kept in 'corrupt_dump' (DUMP format, for
-- RESTORE), so the task still lists, with its reason.
local function archive_corrupt(b, id, t, reason, from)
  local tkey = b.tprefix .. id
  redis.call('ZADD', b.archived, t, id)
  local kind = redis.call('TYPE', tkey)['ok']
  if kind ~= 'hash' and kind ~= 'none' then
    local dump = redis.call('DUMP', tkey)
    redis.call('DEL', tkey)
    redis.call('HSET', tkey, 'corrupt_dump', dump)
  elseif kind == 'hash' then
    free_run(b, tkey)
  end
  redis.call('HSET', tkey, 'state', 'archived', 'error', 'corrupt record: ' .. reason,
    'failed_at', t, 'since', t)
  redis.call('HDEL', tkey, 'lease', 'run')
  if from then redis.call('ZREM', b[from], id) end
end

-- Record a failed attempt of an ACTIVE task: RETRY due at `due` (µs), or ARCHIVED when due is nil.
-- The caller has read the record (it is a hash). HINCRBY comes first, as the one write that can
-- fail; a 'retried' it refuses archives the task as corrupt, with the attempt's error.
-- Wake a client waiting on the task's result (client.wait), if one flagged the record: the
-- list sits beside the record (r:<id> for t:<id>), holds one token at most, and the waiter
-- deletes it when it stops waiting.
local function wake_result(b, id)
  local rkey = string.sub(b.tprefix, 1, -3) .. 'r:' .. id
  redis.call('LPUSH', rkey, '1')
  redis.call('LTRIM', rkey, '0', '0')
end

-- The first n characters of UTF-8 text s, cut before a character's first byte (a continuation
-- byte, 128-191, belongs to the character before it), as Python's s[:n] cuts the text.
local function clip_chars(s, n)
  if #s <= n then return s end
  local count = 0
  for i = 1, #s do
    local c = string.byte(s, i)
    if c < 128 or c >= 192 then
      count = count + 1
      if count > n then return string.sub(s, 1, i - 1) end
    end
  end
  return s
end

-- Add the attempt that just failed to the task's retry history: the 'history' field, a JSON list
-- of [attempt, failed_at µs as a string, error cut to 512 characters], the last 20 kept
-- (conveyor/brokers/history.py: HISTORY_ERROR_CHARS, HISTORY_KEPT). A field that does not hold
-- such a list is started afresh.
local function record_attempt(tkey, attempt, t, err)
  local ok, list = pcall(cjson.decode, redis.call('HGET', tkey, 'history') or '[]')
  if not ok or type(list) ~= 'table' then list = {} end
  list[#list + 1] = {attempt, int_text(t), clip_chars(err, 512)}
  local from = math.max(1, #list - 19)
  local kept = {}
  for i = from, #list do kept[#kept + 1] = list[i] end
  redis.call('HSET', tkey, 'history', cjson.encode(kept))
end

local function fail_task(b, id, t, err, due)
  local tkey = b.tprefix .. id
  local attempt = redis.pcall('HINCRBY', tkey, 'retried', 1)
  if type(attempt) == 'table' then
    archive_corrupt(b, id, t, 'bad retried (attempt failed: ' .. err .. ')', 'active')
    count_done(b, t, true)
    return
  end
  record_attempt(tkey, attempt, t, err)
  if due then
    redis.call('ZADD', b.retry, due, id)
    redis.call('HSET', tkey, 'state', 'retry', 'ready', seconds(due), 'error', err,
      'failed_at', t, 'since', t)
  else
    redis.call('ZADD', b.archived, t, id)
    redis.call('HSET', tkey, 'state', 'archived', 'error', err, 'failed_at', t, 'since', t)
    if redis.call('HGET', tkey, 'waited') then wake_result(b, id) end
  end
  free_run(b, tkey)
  redis.call('HDEL', tkey, 'lease', 'run')
  redis.call('ZREM', b.active, id)
  if due then wake(b) end
  count_done(b, t, true)
end
