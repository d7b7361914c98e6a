-- workers.lua: the worker registry (register, unregister, list), one atomic step per call.
-- KEYS:    [1] ns:{~workers}:records (HASH id -> "<beat µs> <JSON>"),
--          [2] ns:{~workers}:expiry (ZSET id -> lapse time µs).
-- ARGV:    [1] 'register', [2] worker id, [3] JSON record, [4] ttl in µs
--          | [1] 'unregister', [2] worker id
--          | [1] 'list'
-- Returns: register/unregister: 1; list: {id_1, "<beat µs> <JSON>", ...} for live workers, by id,
--          after deleting the records past their lapse time.

local t = now()
local op = ARGV[1]
if op == 'register' then
  redis.call('HSET', KEYS[1], ARGV[2], int_text(t) .. ' ' .. ARGV[3])
  redis.call('ZADD', KEYS[2], t + tonumber(ARGV[4]), ARGV[2])
  return 1
elseif op == 'unregister' then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', t)
for _, id in ipairs(lapsed) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local out = {}
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. t, '+inf')
table.sort(live)
for _, id in ipairs(live) do
  local record = redis.call('HGET', KEYS[1], id)
  if record then
    out[#out + 1] = id
    out[#out + 1] = record
  end
end
return out
