-- page.lua: a page of task records from one state's set, read atomically.
-- KEYS:    one 13-key block (see lib.lua).
-- ARGV:    [1] state name (a set of the block), [2] first rank, [3] last rank (-1 = the end).
-- Returns: {{id, flat HGETALL}, ...} in set order; ids whose record is gone are skipped.

local b = block(1)
local set = b[STATE_SET[ARGV[1]]]
local out = {}
for _, id in ipairs(redis.call('ZRANGE', set, ARGV[2], ARGV[3])) do
  local rec = redis.call('HGETALL', b.tprefix .. id)
  if #rec > 0 then
    out[#out + 1] = {id, rec}
  end
end
return out
