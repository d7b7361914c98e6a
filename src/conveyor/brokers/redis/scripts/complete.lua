-- complete.lua: record successful attempts and enqueue their successors, one step each.
-- KEYS:    one 13-key block per queue involved (see lib.lua).
-- ARGV:    [1] completion count n, then n completions of 5 fields: queue block index, id, token,
--          has_result ('1'/'0'), result; then the successor count m, then m successors of
--          1 + 13 fields: the index of the completion they follow, then a message (lib.lua).
-- Returns: {now_us, done_1, ..., done_k} with done 1 (applied) or 0 (lease lost). When a
--          successor of completion k is refused, k < n + 1 and the reply ends with
--          {'conflict' or 'duplicate', successor index}; completions from k on are not applied.

local n = tonumber(ARGV[1])
local m = tonumber(ARGV[2 + n * 5])
local sbase = 2 + n * 5
local t = now()
local out = {t}
local woken = {}

local function successors_of(i)
  local found = {}
  for j = 1, m do
    local o = sbase + (j - 1) * (MSG + 1)
    if tonumber(ARGV[o + 1]) == i then
      found[#found + 1] = {j, o + 1}
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
    if m > 0 then succ = successors_of(i) end
    local seen = {}
    for _, s in ipairs(succ) do
      local refused = check_message(s[2], seen, id)
      if refused then
        out[#out + 1] = refused
        out[#out + 1] = s[1]
        wake_all(woken)
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
    count_done(b, t, false)
    for _, s in ipairs(succ) do
      store_message(s[2], t, woken)
    end
    out[#out + 1] = 1
  end
end
wake_all(woken)
return out
