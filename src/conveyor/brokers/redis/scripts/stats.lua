-- stats.lua: counts by state, paused flag and today's (UTC, server clock) totals of one queue.
-- KEYS:    one 13-key block (see lib.lua).
-- ARGV:    none.
-- Returns: {pending, scheduled, retry, active, archived, completed, paused, processed, failed}.

local b = block(1)
local day = math.floor(now() / 86400000000)
local totals = redis.call('HMGET', b.stats, 'p:' .. day, 'f:' .. day)
return {
  redis.call('ZCARD', b.pending), redis.call('ZCARD', b.scheduled), redis.call('ZCARD', b.retry),
  redis.call('ZCARD', b.active), redis.call('ZCARD', b.archived), redis.call('ZCARD', b.completed),
  redis.call('EXISTS', b.paused), tonumber(totals[1]) or 0, tonumber(totals[2]) or 0,
}
