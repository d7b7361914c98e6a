-- unclaim.lua: give back the tasks of a claim whose reply was lost (the caller never got
-- their leases), so they run again now instead of after their leases lapse, and no crash is
-- counted against them.
-- KEYS:    the claim's KEYS: its 13-key blocks, then its receipt key (see claim.lua).
-- ARGV:    [1] the claim's id.
-- Returns: how many tasks were given back. Nothing changes when the receipt is gone (expired
--          with the leases) or belongs to a later claim, or for a task no longer leased under
--          the claim's token (completed, recovered, or released since).

local receipt = KEYS[math.floor(#KEYS / BLOCK) * BLOCK + 1]
local text = redis.call('GET', receipt)
if not text then return 0 end
local parts = {}
for word in string.gmatch(text, '%S+') do parts[#parts + 1] = word end
if parts[1] ~= ARGV[1] then return 0 end
local t = now()
local given = 0
for j = 2, #parts - 2, 3 do
  local b, id, token = block(tonumber(parts[j])), parts[j + 1], parts[j + 2]
  if holds_lease(b.tprefix .. id, token) then
    release_leased(b, id, t)
    given = given + 1
  end
end
redis.call('DEL', receipt)
return given
