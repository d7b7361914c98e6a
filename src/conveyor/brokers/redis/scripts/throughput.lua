-- throughput.lua: per-minute processed/failed totals of one queue (UTC minutes, server clock).
-- KEYS:    one 13-key block (see lib.lua).
-- ARGV:    [1] how many minutes, the current one last.
-- Returns: {current minute (minutes since the epoch), processed..., failed...}, oldest first,
--          one processed and one failed count per minute (0 where none was stored).

local b = block(1)
local last = math.floor(now() / 60000000)
local count = tonumber(ARGV[1])
local fields = {}
for m = last - count + 1, last do fields[#fields + 1] = 'pm:' .. m end
for m = last - count + 1, last do fields[#fields + 1] = 'fm:' .. m end
local out = {last}
for _, v in ipairs(redis.call('HMGET', b.stats, unpack(fields))) do
  out[#out + 1] = tonumber(v) or 0
end
return out
