-- complete.lua: record successful attempts and enqueue their successors, one step each.
-- KEYS:    one 13-key block per queue involved (see lib.lua).
-- ARGV:    [1] completion count n, then n completions of 5 fields: queue block index, id, token,
--          has_result ('1'/'0'), result; then a JSON array of successors, each
--          [index of the completion it follows, message (lib.lua)]; then their payloads.
-- Returns: {now_us, done_1, ..., done_k} with done 1 (applied) or 0 (lease lost). When a
--          successor of completion k is refused, k < n + 1 and the reply ends with
--          {'conflict' or 'duplicate', successor index}; completions from k on are not applied.

local n = tonumber(ARGV[1])
local sbase = 2 + n * 5
local succs = cjson.decode(ARGV[sbase])
local t = now()
local out = {t}
local ctx = new_batch()
local done = {}  -- processed count per stats key, added once at the end
local day = math.floor(t / 86400000000)

local function finish()
  for stats, count in pairs(done) do
    redis.call('HINCRBY', stats, 'p:' .. day, count)
  end
  wake_all(ctx)
end

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
  local o = 1 + (i - 1) * 5
  local b = block(tonumber(ARGV[o + 1]))
  local id = ARGV[o + 2]
  local tkey = b.tprefix .. id
  if not holds_lease(tkey, ARGV[o + 3]) then
    out[#out + 1] = 0
  else
    local succ = {}
    if #succs > 0 then succ = successors_of(i) end
    local seen = {}
    for _, s in ipairs(succ) do
      local refused = check_message(s[2], seen, id)
      if refused then
        out[#out + 1] = refused
        out[#out + 1] = s[1]
        finish()
        return out
      end
    end
    local rec = redis.call('HMGET', tkey, 'retention', 'unique_key')
    release_unique(b, id, rec[2])
    redis.call('ZREM', b.active, id)
    local retention = tonumber(rec[1]) or 0
    if retention > 0 then
      redis.call('HSET', tkey, 'state', 'completed', 'completed_at', t, 'since', t)
      redis.call('HDEL', tkey, 'lease')
      if ARGV[o + 4] == '1' then
        redis.call('HSET', tkey, 'result', ARGV[o + 5])
      end
      redis.call('ZADD', b.completed, t, id)
      redis.call('ZADD', b.expiry, t + math.floor(retention * 1000000), id)
    else
      redis.call('DEL', tkey)
    end
    done[b.stats] = (done[b.stats] or 0) + 1
    for _, s in ipairs(succ) do
      store_message(s[2], ARGV[sbase + s[1]], t, ctx)
    end
    out[#out + 1] = 1
  end
end
finish()
return out
