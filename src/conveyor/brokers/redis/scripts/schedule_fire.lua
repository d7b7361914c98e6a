-- schedule_fire.lua: fire schedule entries of one queue, each as one compare-and-set on its
-- cursor together with the enqueue of its tasks, or the record of its workflows to create
-- (see conveyor/brokers/schedules.py and conveyor/brokers/redis/schedules.py).
-- KEYS:    [1..13] the queue's key block (lib.lua); [14] its due set; [15] its pending workflow
--          records (hash), [16] their fire times (sorted set); [17..16+n] the records of the n
--          fires; then, on a standalone server, the queue registry.
-- ARGV:    [1] '1' when the registry key is given, else '0'; [2] a JSON array of the fires,
--          each {record index (1..n), entry name, revision, expected cursor (µs), next cursor
--          (µs), fire time (µs, '' for none), message count, workflow count}; [3] a JSON array
--          of the messages in fire order (lib.lua layout, block index 1); [4] a JSON array of
--          the workflow ids in fire order; [5..] the messages' payloads, then the workflows'
--          records ('<retention s>\n<graph>'), in that order.
-- Returns: {now_us, fire_1, ..., fire_n}: a fire is {0} when stale (the entry was changed,
--          paused, removed or already fired: nothing written), else {1, id, ...}: the ids of
--          the messages stored (one whose id or unique key is taken is skipped: that fire's task
--          exists) or of the workflows recorded to create (each in the pending hash, created
--          next by the caller or, if it dies, by the next scheduler's round).

-- This script knows where the registry is; lib.lua's guess from the key count does not apply.
REGISTRY = nil
if ARGV[1] == '1' then REGISTRY = KEYS[#KEYS] end

local due, pend, pendq = KEYS[14], KEYS[15], KEYS[16]
local fires = cjson.decode(ARGV[2])
local msgs = cjson.decode(ARGV[3])
local wfs = cjson.decode(ARGV[4])
local t = now()
local ctx = new_batch()
local out = {t}
local mi, wi = 0, 0

for _, f in ipairs(fires) do
  local rk = KEYS[16 + f[1]]
  local count, wcount = f[7], f[8]
  local cur = redis.call('HMGET', rk, 'rev', 'paused', 'next')
  if cur[1] ~= f[3] or cur[2] == '1' or cur[3] ~= f[4] then
    out[#out + 1] = {0}
    mi = mi + count
    wi = wi + wcount
  else
    local res = {1}
    local last = nil
    for _ = 1, count do
      mi = mi + 1
      local m = msgs[mi]
      if check_message(m, {}, nil, false) == nil then
        store_message(m, ARGV[4 + mi], t, ctx)
        res[#res + 1] = m[2]
        last = m[2]
      end
    end
    for _ = 1, wcount do
      wi = wi + 1
      local id = wfs[wi]
      redis.call('HSET', pend, id, ARGV[4 + #msgs + wi])
      redis.call('ZADD', pendq, int_text(t), id)
      res[#res + 1] = id
      last = id
    end
    redis.call('HSET', rk, 'next', f[5])
    if f[6] ~= '' then redis.call('HSET', rk, 'last', f[6]) end
    if last then redis.call('HSET', rk, 'last_task', last) end
    redis.call('ZADD', due, f[5], f[2])
    out[#out + 1] = res
  end
end
wake_all(ctx)
return out
