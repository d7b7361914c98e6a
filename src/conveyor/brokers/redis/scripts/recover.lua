-- recover.lua: fail ACTIVE tasks of one queue whose lease expired before now.
-- KEYS:    one 13-key block (see lib.lua).
-- ARGV:    [1] retry delay in µs (spread per task, see spread below), [2] error text, [3] batch
--          size, [4] max crashes (lost leases after which a task is archived whatever retries it
--          has left), [5] the error text recorded then.
-- Returns: {recovered, more} where more is 1 when a full batch was taken (call again).

local b = block(1)
local t = now()
run_when_full(b)  -- a lapsed lease's task is put back to run (a short error text), even then
local delay = tonumber(ARGV[1])
local batch = tonumber(ARGV[3])
local max_crashes = tonumber(ARGV[4])
-- Expired means expiry < now. Scores are whole microseconds, so that is expiry <= now - 1 (a
-- '(' .. t string would print t with 14 digits and lose the microseconds).
local ids = redis.call('ZRANGEBYSCORE', b.active, '-inf', t - 1, 'LIMIT', 0, batch)
-- The delay's factor for this task and crash, in [0.5, 1): the first 32 bits of the SHA-1 of
-- "<id>:<crash>", as conveyor.brokers.protocol.recover_spread computes it.
local function spread(id, crash)
  return 0.5 + tonumber(string.sub(redis.sha1hex(id .. ':' .. crash), 1, 8), 16) / 8589934592
end

for _, id in ipairs(ids) do
  local tkey = b.tprefix .. id
  -- pcall: a key of the wrong type is a corrupt record (archived), not an error that would stop
  -- every later recovery of this queue at the same entry.
  local rec = redis.pcall('HMGET', tkey, 'retried', 'max_retry', 'state')
  local crash
  local unusable = unreadable(rec, tkey, rec[3])
  if unusable then
    archive_corrupt(b, id, t, unusable, 'active')
  elseif rec[3] ~= 'active' and STATE_SET[rec[3]] then
    redis.call('ZREM', b.active, id)  -- stray index entry; the record lives elsewhere
  elseif rec[3] ~= 'active' then
    -- In no state set but this one: archived, never dropped.
    archive_corrupt(b, id, t, 'bad state ' .. tostring(rec[3]), 'active')
  else
    crash = redis.pcall('HINCRBY', tkey, 'crashes', 1)
    if type(crash) == 'table' then
      archive_corrupt(b, id, t, 'bad crashes', 'active')
    elseif crash >= max_crashes then
      fail_task(b, id, t, ARGV[5], nil)
    elseif (tonumber(rec[1]) or 0) + 1 > (tonumber(rec[2]) or 0) then
      fail_task(b, id, t, ARGV[2], nil)
    else
      fail_task(b, id, t, ARGV[2], t + math.floor(delay * spread(id, crash)))
    end
  end
end
local more = 0
if #ids == batch then more = 1 end
return {#ids, more}
