-- extend.lua: push leases to now + lease length, each a compare-and-set on its token.
-- KEYS:    one 13-key block per queue involved (see lib.lua).
-- ARGV:    [1] lease length in µs, [2] count n, then n leases of 3 fields: block index, id, token.
-- Returns: {new_expiry_us, held_1, ..., held_n} with held 1 (extended) or 0 (lost).

local t = now()
run_when_full(block(1))
local expiry = t + tonumber(ARGV[1])
local out = {expiry}
for i = 1, tonumber(ARGV[2]) do
  local o = 2 + (i - 1) * 3
  local b = block(tonumber(ARGV[o + 1]))
  local id = ARGV[o + 2]
  local tkey = b.tprefix .. id
  if holds_lease(tkey, ARGV[o + 3]) then
    redis.call('HSET', tkey, 'lease', expiry)
    redis.call('ZADD', b.active, expiry, id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
