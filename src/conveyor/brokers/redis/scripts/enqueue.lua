-- enqueue.lua: store a batch of tasks, all or nothing.
-- KEYS:    one 13-key block per queue in the batch (see lib.lua).
-- ARGV:    [1] JSON array of n messages (layout in lib.lua), [2..n+1] their payloads.
-- Returns: {'ok', now_us, state_1, ..., state_n}, or {'conflict', i} / {'duplicate', i} for the
--          first refused message i (then nothing is stored).

local msgs = cjson.decode(ARGV[1])
local seen = {}
for i, m in ipairs(msgs) do
  local refused = check_message(m, seen, nil)
  if refused then
    return {refused, i}
  end
end
local t = now()
local out = {'ok', t}
local ctx = new_batch()
for i, m in ipairs(msgs) do
  out[i + 2] = store_message(m, ARGV[i + 1], t, ctx)
end
wake_all(ctx)
return out
