-- schedule_due.lua: the entries of one queue due by the server's clock, the next cursor, and
-- the workflows its entries fired that are still not created after a grace period (their
-- scheduler died between the fire and the creation: see conveyor/brokers/redis/schedules.py).
-- KEYS:    [1] the queue's due set, [2] the prefix of its entry records, [3] its pending
--          workflow records (hash), [4] their fire times (sorted set).
-- ARGV:    [1] the most entries to return, [2] the grace period (µs), [3] the most pending
--          workflows to return.
-- Returns: {now_us, next cursor after now (µs) or '', pending, entry_1, ...}: pending is a flat
--          list {workflow id, record or false, ...}; an entry is its name followed by its record
--          as HGETALL gives it.

local t = now()
local names = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int_text(t), 'LIMIT', 0, tonumber(ARGV[1]))
local after = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. int_text(t), '+inf', 'WITHSCORES',
  'LIMIT', 0, 1)
local pending = {}
local left = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', int_text(t - tonumber(ARGV[2])),
  'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(left) do
  pending[#pending + 1] = id
  pending[#pending + 1] = redis.call('HGET', KEYS[3], id)
end
local out = {t, after[2] or '', pending}
for _, name in ipairs(names) do
  local rec = redis.call('HGETALL', KEYS[2] .. name)
  table.insert(rec, 1, name)
  out[#out + 1] = rec
end
return out
