-- delete_queue.lua: remove one queue entirely (inspector "delete queue"), or refuse.
-- KEYS:    one 13-key block (see lib.lua); [14] the queue registry, only when it can share the
--          script (not on Cluster, where it lives in another slot and the caller removes the
--          entry right after).
-- ARGV:    [1] '1' to delete whatever tasks the queue holds, '0' to refuse any;
--          [2] the queue name (the registry member).
-- Returns: {0, 0} deleted (or nothing to delete); {1, n} refused, not forced and n tasks held;
--          {2, n} refused, n tasks ACTIVE (workers hold their leases). A refusal changes nothing.
--
-- The seq key (fencing-token counter) is kept on purpose: a token must never repeat for a task
-- re-created under the same id, even after its queue was deleted (see keys.py).
--
-- Unique locks are found through the task records (their 'unique_key' field), not by SCAN: a
-- lock lives only while the task holding it does (every path that deletes a task releases its
-- lock, and a lock with a TTL expires by itself), SCAN inside a script would walk the whole
-- keyspace while blocking Redis, and a SCAN outside it could not be atomic with the rest. A
-- lock named by any record of the queue is deleted whoever holds it: its holder is a task of
-- this same queue, which is going too.

local b = block(1)
local force = ARGV[1] == '1'
local SETS = {'pending', 'scheduled', 'retry', 'active', 'archived', 'completed'}

local held = 0
for _, name in ipairs(SETS) do
  held = held + redis.call('ZCARD', b[name])
end
if held > 0 and not force then
  return {1, held}
end
local active = redis.call('ZCARD', b.active)
if active > 0 then
  return {2, active}
end

local CHUNK = 1000  -- ids per ZRANGE: bounds the Lua table, not the script's run time
for _, name in ipairs(SETS) do
  local set = b[name]
  local first = 0
  while true do
    local ids = redis.call('ZRANGE', set, first, first + CHUNK - 1)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local tkey = b.tprefix .. id
      local ukey = redis.call('HGET', tkey, 'unique_key')
      if ukey and ukey ~= '' then
        redis.call('DEL', b.uprefix .. ukey)
      end
      redis.call('DEL', tkey)
    end
    first = first + CHUNK
  end
end

redis.call('DEL', b.pending, b.scheduled, b.retry, b.active, b.archived, b.completed, b.expiry,
  b.wake, b.paused, b.stats)
if KEYS[14] then
  redis.call('SREM', KEYS[14], ARGV[2])
end
return {0, 0}
