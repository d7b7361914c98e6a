-- peek.lua: how long an idle worker may sleep on the given queues.
-- KEYS:    one 13-key block per queue (see lib.lua).
-- ARGV:    none.
-- Returns: µs until the earliest waiting task of an unpaused queue, not at its concurrency
--          limit (limits.lua), is ready (0 = ready now),
--          or -1 when none is waiting. When nothing is ready it also clears the queues' wake
--          lists: their tokens announced changes this answer already reflects, and leaving them
--          would make the next BLPOP return at once for nothing.

local t = now()
local best = -1
for qi = 1, #KEYS / BLOCK do
  local b = block(qi)
  if redis.call('EXISTS', b.paused) == 0 and not queue_full(b) then
    if redis.call('ZCARD', b.pending) > 0 or slot_free(b, false) then
      return 0
    end
    for _, set in ipairs({b.scheduled, b.retry}) do
      local head = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
      if head[2] ~= nil then
        local wait = tonumber(head[2]) - t
        if wait <= 0 then
          return 0
        end
        if best < 0 or wait < best then best = wait end
      end
    end
  end
end
for qi = 1, #KEYS / BLOCK do
  redis.call('DEL', block(qi).wake)
end
return best
