-- purge.lua: delete COMPLETED tasks of one queue whose retention has ended, and its daily
-- processed/failed totals ('p:<day>', 'f:<day>' in the stats hash) older than the days kept, and
-- its per-minute totals ('pm:<minute>', 'fm:<minute>') older than the minutes kept.
-- KEYS:    one 13-key block (see lib.lua).
-- ARGV:    [1] batch size, [2] days of totals kept, [3] minutes of totals kept.
-- Returns: {deleted, more} where more is 1 when a full batch was taken (call again).

local b = block(1)
local t = now()
local batch = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', b.expiry, '-inf', t, 'LIMIT', 0, batch)
local deleted = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', b.expiry, id)
  redis.call('ZREM', b.completed, id)
  local tkey = b.tprefix .. id
  if redis.call('HGET', tkey, 'state') == 'completed' then
    redis.call('DEL', tkey)
    deleted = deleted + 1
  end
end
local more = 0
if #ids == batch then more = 1 end
if more == 0 then
  local oldest_kept = math.floor(t / 86400000000) - tonumber(ARGV[2])
  local oldest_minute = math.floor(t / 60000000) - tonumber(ARGV[3]) + 1
  for _, field in ipairs(redis.call('HKEYS', b.stats)) do
    local day = tonumber(string.match(field, '^[pf]:([0-9]+)$'))
    local minute = tonumber(string.match(field, '^[pf]m:([0-9]+)$'))
    if (day and day < oldest_kept) or (minute and minute < oldest_minute) then
      redis.call('HDEL', b.stats, field)
    end
  end
end
return {deleted, more}
