-- enqueue.lua: store groups of tasks, each group all or nothing (one group = one enqueue call;
-- concurrent calls are combined into one script run).
-- KEYS:    one 13-key block per queue in the batch (see lib.lua).
-- ARGV:    [1] JSON array of n messages (layout in lib.lua), [2] JSON array of group sizes
--          (summing to n, in message order), [3..n+2] the messages' payloads.
-- Returns: {now_us, group_1, ..., group_g}; a group is {'ok', state_1, ..., state_k} or
--          {'conflict', i} / {'duplicate', i} for its first refused message i (then none of
--          that group is stored).

local msgs = cjson.decode(ARGV[1])
local sizes = cjson.decode(ARGV[2])
local t = now()
local out = {t}
local ctx = new_batch()
local first = 1
for g, size in ipairs(sizes) do
  local last = first + size - 1
  local seen = {}
  local refused, at = nil, 0
  for i = first, last do
    refused = check_message(msgs[i], seen, nil)
    if refused then
      at = i - first + 1
      break
    end
  end
  if refused then
    out[g + 1] = {refused, at}
  else
    local res = {'ok'}
    for i = first, last do
      res[#res + 1] = store_message(msgs[i], ARGV[i + 2], t, ctx)
    end
    out[g + 1] = res
  end
  first = last + 1
end
wake_all(ctx)
return out
