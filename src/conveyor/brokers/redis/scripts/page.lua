-- page.lua: a page of task records from one state's set, read atomically.
-- KEYS:    one 13-key block (see lib.lua).
-- ARGV:    [1] state name (a set of the block), [2] first rank, [3] last rank (-1 = the end).
-- Returns: {{id, flat HGETALL}, ...} in set order; ids whose record is gone are skipped. The
--          attempt history (up to 20 errors) is left out: a page lists tasks, get_task shows it.

local b = block(1)
local set = b[STATE_SET[ARGV[1]]]
local out = {}
for _, id in ipairs(redis.call('ZRANGE', set, ARGV[2], ARGV[3])) do
  local rec = redis.call('HGETALL', b.tprefix .. id)
  if #rec > 0 then
    local kept = {}
    for i = 1, #rec, 2 do
      if rec[i] ~= 'history' then
        kept[#kept + 1] = rec[i]
        kept[#kept + 1] = rec[i + 1]
      end
    end
    out[#out + 1] = {id, kept}
  end
end
return out
