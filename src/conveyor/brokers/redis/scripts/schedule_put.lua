-- schedule_put.lua: store a schedule entry, or keep the stored one when its definition is the
-- same (cursor, revision and paused flag included), so schedulers starting at once never reset
-- a cursor. A replaced entry keeps its paused flag.
-- KEYS:    [1] the entry's record, [2] its queue's due set (both in the queue's slot).
-- ARGV:    [1] the entry name; [2] a JSON array of the definition fields in DEF order ('' for
--          none); [3] the payload; [4] the new revision; [5] the cursor (µs); [6] '1' to store
--          it paused when there is no entry yet, else '0'.
-- Returns: the stored record, as HGETALL gives it.

local DEF = {'type', 'encoding', 'options', 'cron', 'every', 'tz', 'missed', 'owner'}
local rk, due = KEYS[1], KEYS[2]
local def = cjson.decode(ARGV[2])
local payload = ARGV[3]
local paused = ARGV[6]

local cur = redis.call('HGETALL', rk)
if #cur > 0 then
  local old = {}
  for i = 1, #cur, 2 do old[cur[i]] = cur[i + 1] end
  local same = old['payload'] == payload
  for i, f in ipairs(DEF) do
    if (old[f] or '') ~= def[i] then same = false end
  end
  if same then return cur end
  paused = old['paused'] or '0'
end

redis.call('DEL', rk)
local fields = {'payload', payload, 'rev', ARGV[4], 'paused', paused, 'next', ARGV[5]}
for i, f in ipairs(DEF) do
  if def[i] ~= '' then
    fields[#fields + 1] = f
    fields[#fields + 1] = def[i]
  end
end
redis.call('HSET', rk, unpack(fields))
if paused == '1' then
  redis.call('ZREM', due, ARGV[1])
else
  redis.call('ZADD', due, ARGV[5], ARGV[1])
end
return redis.call('HGETALL', rk)
