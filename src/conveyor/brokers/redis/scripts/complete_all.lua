-- complete_all.lua: record successful attempts and enqueue their successors, all or none.
-- KEYS:    as complete.lua: one 13-key block per queue involved (see lib.lua); then, on a
--          standalone server, the queue registry. Loaded after lib.lua and limits.lua.
-- ARGV:    as complete.lua: [1] completion count n; [2] the n completions, 4 words each:
--          queue block index, id, token, has_result ('1'/'0'); [3] a JSON array of successors,
--          each [index of the completion it follows, message (lib.lua)]; then the results of
--          the completions that have one, in order; then the successors' payloads.
-- Returns: {now_us, 1, ..., 1} (n ones) when everything was applied; {now_us, 0} when a lease
--          was lost; {now_us, 'conflict' or 'duplicate', successor index} when a successor is
--          refused. Nothing is written unless everything is: all checks come first.

local n = tonumber(ARGV[1])
local words = {}
for w in string.gmatch(ARGV[2], '%S+') do words[#words + 1] = w end
local succs = cjson.decode(ARGV[3])
local t = now()

-- Checks, before any write. A successor is checked against the store as it is now, with one
-- `seen` for the whole call: stricter than complete.lua (which frees each completed task's id
-- and lock before checking the next completion's successors), so nothing can fail below.
for i = 1, n do
  local o = (i - 1) * 4
  if not holds_lease(block(tonumber(words[o + 1])).tprefix .. words[o + 2], words[o + 3]) then
    return {t, 0}
  end
end
local seen = {}
for j, s in ipairs(succs) do
  local o = (s[1] - 1) * 4
  -- The completing task's own lock is free to its successors in its own queue only.
  local owner = nil
  if s[2][1] == tonumber(words[o + 1]) then owner = words[o + 2] end
  local refused = check_message(s[2], seen, owner)
  if refused then
    return {t, refused, j}
  end
end

-- Even a full Redis records a success (see complete.lua).
run_when_full(block(1))
local nresults = 0
for i = 1, n do
  if words[i * 4] == '1' then nresults = nresults + 1 end
end
local sbase = 3 + nresults  -- successor j's payload is ARGV[sbase + j]
local next_result = 3
local ctx = new_batch()
local day = math.floor(t / 86400000000)
local minute = math.floor(t / 60000000)
local out = {t}
for i = 1, n do
  local o = (i - 1) * 4
  local b = block(tonumber(words[o + 1]))
  local id = words[o + 2]
  local result = nil
  if words[o + 4] == '1' then
    next_result = next_result + 1
    result = ARGV[next_result]
  end
  complete_leased(b, id, t, result, nil)  -- limits.lua: frees its concurrency slot too
  redis.call('HINCRBY', b.stats, 'p:' .. day, 1)
  redis.call('HINCRBY', b.stats, 'pm:' .. minute, 1)
  out[#out + 1] = 1
end
for j, s in ipairs(succs) do
  store_message(s[2], ARGV[sbase + j], t, ctx)
end
wake_all(ctx)
return out
