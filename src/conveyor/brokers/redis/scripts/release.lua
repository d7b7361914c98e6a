-- release.lua: give an unfinished task back: PENDING with its old ready time (the front).
-- KEYS:    one 13-key block: the task's queue (see lib.lua).
-- ARGV:    [1] id, [2] token.
-- Returns: 1 when released, 0 when the lease was lost (nothing changed).

local b = block(1)
local id = ARGV[1]
if not holds_lease(b.tprefix .. id, ARGV[2]) then
  return 0
end
run_when_full(b)
release_leased(b, id, now())
return 1
