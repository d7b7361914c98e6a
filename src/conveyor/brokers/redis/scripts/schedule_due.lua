-- schedule_due.lua: the entries of one queue due by the server's clock, and the next cursor.
-- KEYS:    [1] the queue's due set, [2] the prefix of its entry records.
-- ARGV:    [1] the most entries to return.
-- Returns: {now_us, next cursor after now (µs) or '', entry_1, ...}: an entry is its name
--          followed by its record as HGETALL gives it.

local t = now()
local names = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', digits(t), 'LIMIT', 0, tonumber(ARGV[1]))
local after = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. digits(t), '+inf', 'WITHSCORES',
  'LIMIT', 0, 1)
local out = {t, after[2] or ''}
for _, name in ipairs(names) do
  local rec = redis.call('HGETALL', KEYS[2] .. name)
  table.insert(rec, 1, name)
  out[#out + 1] = rec
end
return out
