-- schedule_fire.lua: fire schedule entries of one queue, each as one compare-and-set on its
-- cursor together with the enqueue of its tasks (see conveyor/brokers/schedules.py).
-- KEYS:    [1..13] the queue's key block (lib.lua); [14] its due set; [15..14+n] the records
--          of the n fires; then, on a standalone server, the queue registry.
-- ARGV:    [1] '1' when the registry key is given, else '0'; [2] a JSON array of the fires,
--          each {record index (1..n), entry name, revision, expected cursor (µs), next cursor
--          (µs), fire time (µs, '' for none), message count, last workflow id ('' for none:
--          a workflow entry's workflows are created before)}; [3] a JSON array of the messages
--          in fire order (lib.lua layout, block index 1); [4..] their payloads, in that order.
-- Returns: {now_us, fire_1, ..., fire_n}: a fire is {0} when stale (the entry was changed,
--          paused, removed or already fired: nothing written), else {1, id stored, ...}; a
--          message whose id or unique key is taken is skipped (that fire's task exists).

-- This script knows where the registry is; lib.lua's guess from the key count does not apply.
REGISTRY = nil
if ARGV[1] == '1' then REGISTRY = KEYS[#KEYS] end

local due = KEYS[14]
local fires = cjson.decode(ARGV[2])
local msgs = cjson.decode(ARGV[3])
local t = now()
local ctx = new_batch()
local out = {t}
local mi = 0

for _, f in ipairs(fires) do
  local rk = KEYS[14 + f[1]]
  local count = f[7]
  local cur = redis.call('HMGET', rk, 'rev', 'paused', 'next')
  if cur[1] ~= f[3] or cur[2] == '1' or cur[3] ~= f[4] then
    out[#out + 1] = {0}
    mi = mi + count
  else
    local res = {1}
    local last = nil
    for _ = 1, count do
      mi = mi + 1
      local m = msgs[mi]
      if check_message(m, {}, nil, false) == nil then
        store_message(m, ARGV[3 + mi], t, ctx)
        res[#res + 1] = m[2]
        last = m[2]
      end
    end
    redis.call('HSET', rk, 'next', f[5])
    if f[6] ~= '' then redis.call('HSET', rk, 'last', f[6]) end
    if f[8] ~= nil and f[8] ~= '' then last = f[8] end
    if last then redis.call('HSET', rk, 'last_task', last) end
    redis.call('ZADD', due, f[5], f[2])
    out[#out + 1] = res
  end
end
wake_all(ctx)
return out
