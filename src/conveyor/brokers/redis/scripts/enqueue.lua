-- enqueue.lua: store a batch of tasks, all or nothing.
-- KEYS:    one 13-key block per queue in the batch (see lib.lua).
-- ARGV:    [1] message count n, then n messages of 13 fields each (layout in lib.lua).
-- Returns: {'ok', now_us, state_1, ..., state_n}, or {'conflict', i} / {'duplicate', i} for the
--          first refused message i (then nothing is stored).

local n = tonumber(ARGV[1])
local seen = {}
for i = 1, n do
  local refused = check_message(1 + (i - 1) * MSG, seen, nil)
  if refused then
    return {refused, i}
  end
end
local t = now()
local out = {'ok', t}
local woken = {}
for i = 1, n do
  out[#out + 1] = store_message(1 + (i - 1) * MSG, t, woken)
end
wake_all(woken)
return out
