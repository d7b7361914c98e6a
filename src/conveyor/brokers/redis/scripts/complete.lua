-- complete.lua: record successful attempts and enqueue their successors, one step each.
-- KEYS:    one 13-key block per queue involved (see lib.lua); then, on a standalone
--          server, the queue registry (each queue stored into is registered: lib.lua).
-- ARGV:    [1] completion count n; [2] the n completions as one space-separated string of
--          4 words each: queue block index, id, token, has_result ('1'/'0') (ids and tokens
--          never contain spaces); [3] a JSON array of successors, each [index of the completion
--          it follows, message (lib.lua)]; then the results of the completions that have one,
--          in order; then the successors' payloads.
-- Returns: {now_us, done_1, ..., done_k} with done 1 (applied) or 0 (lease lost). When a
--          successor of completion k is refused, k < n + 1 and the reply ends with
--          {'conflict' or 'duplicate', successor index}; completions from k on are not applied.

local n = tonumber(ARGV[1])
local words = {}
for w in string.gmatch(ARGV[2], '%S+') do words[#words + 1] = w end
local succs = cjson.decode(ARGV[3])
local nresults = 0
for i = 1, n do
  if words[i * 4] == '1' then nresults = nresults + 1 end
end
local sbase = 3 + nresults  -- successor j's payload is ARGV[sbase + j]
local next_result = 3       -- ARGV index of the last result handed out
local t = now()
-- Even a full Redis records a success (a retained result and successors take room): refused,
-- the lease would lapse and the task run again.
run_when_full(block(1))
local out = {t}
local ctx = new_batch()
local done = {}  -- processed count per stats key, added once at the end
local freed = {}  -- concurrency slots per running count (limits.lua), given back at the end
local day = math.floor(t / 86400000000)
local minute = math.floor(t / 60000000)

local function finish()
  for stats, count in pairs(done) do
    local by = int_text(count)
    redis.call('HINCRBY', stats, 'p:' .. day, by)
    redis.call('HINCRBY', stats, 'pm:' .. minute, by)
  end
  for run, count in pairs(freed) do redis.pcall('INCRBY', run, -count) end
  wake_all(ctx)
end

local NONE = {}  -- no successors (never written to)

-- Successors of completion i, as {successor index, message}.
local function successors_of(i)
  local found = {}
  for j, s in ipairs(succs) do
    if s[1] == i then
      found[#found + 1] = {j, s[2]}
    end
  end
  return found
end

for i = 1, n do
  local o = (i - 1) * 4
  local qi = tonumber(words[o + 1])
  local b = block(qi)
  local id = words[o + 2]
  local result = nil
  if words[o + 4] == '1' then
    next_result = next_result + 1
    result = ARGV[next_result]
  end
  local tkey = b.tprefix .. id
  -- The fields the completion needs, in complete_leased's order, and the lease check's
  -- (holds_lease) last, in one read; a key of the wrong type holds no lease (pcall: its error
  -- reply fails the check below).
  local rec = redis.pcall('HMGET', tkey, 'retention', 'unique_key', 'waited', 'run', 'state',
    'token')
  if rec[5] ~= 'active' or rec[6] ~= words[o + 3] then
    out[#out + 1] = 0
  else
    -- A completion with no successors allocates nothing here (tables cost the collector).
    local succ, seen = NONE, nil
    if #succs > 0 then succ, seen = successors_of(i), {} end
    for _, s in ipairs(succ) do
      -- The completing task's own lock is free to its successors in its own queue only (a task
      -- of the same id in another queue is another task).
      local owner = nil
      if s[2][1] == qi then owner = id end
      local refused = check_message(s[2], seen, owner)
      if refused then
        out[#out + 1] = refused
        out[#out + 1] = s[1]
        finish()
        return out
      end
    end
    complete_leased(b, id, t, result, rec, freed)
    done[b.stats] = (done[b.stats] or 0) + 1
    for _, s in ipairs(succ) do
      store_message(s[2], ARGV[sbase + s[1]], t, ctx)
    end
    out[#out + 1] = 1
  end
end
finish()
return out
