-- fail.lua: record a failed attempt under a lease: RETRY after a delay, or ARCHIVED.
-- KEYS:    one 13-key block: the task's queue (see lib.lua).
-- ARGV:    [1] id, [2] token, [3] error text, [4] delay in µs, or '' to archive.
-- Returns: 1 when recorded, 0 when the lease was lost (nothing changed).

local b = block(1)
local id = ARGV[1]
if not holds_lease(b.tprefix .. id, ARGV[2]) then
  return 0
end
local t = now()
run_when_full(b)  -- the error text is capped (4,096 characters), and replaces the last one
local due = nil
if ARGV[4] ~= '' then
  due = t + tonumber(ARGV[4])
end
fail_task(b, id, t, ARGV[3], due)
slot_freed(b)
return 1
