-- enqueue.lua: store groups of tasks, each group all or nothing (one group = one enqueue call;
-- concurrent calls are combined into one script run).
-- KEYS:    one 13-key block per queue in the batch (see lib.lua); then, on a standalone
--          server, the queue registry (each queue stored into is registered: lib.lua).
-- ARGV:    [1] JSON array of shapes: the fields messages share, each {block index, type,
--          encoding, max_retry, timeout, deadline, retention, unique_ttl_ms, process_at,
--          process_in_us} (as in lib.lua's message layout), [2] JSON array of group sizes
--          (summing to n, in message order), [3] n heads "<shape> <id> <payload length>
--          <unique key length>" separated by spaces (ids have no spaces), [4] the payloads and
--          unique keys concatenated in message order (a length 0 unique key = none).
--          A constant number of arguments keeps the per-task cost of sending them low.
-- Returns: {now_us, group_1, ..., group_g}; a group is {'ok', states} with one letter per task
--          (p pending, s scheduled), or {'conflict', i} / {'duplicate', i} for its first refused
--          message i, or {'full', i} for the first message i of a queue past its length limit
--          (limits.lua) (then none of that group is stored).

local shapes = cjson.decode(ARGV[1])
local sizes = cjson.decode(ARGV[2])
local blob = ARGV[4]
local t = now()
local out = {t}
local ctx = new_batch()
local unflushed = {}  -- per block: pending tasks stored by this run, not yet in the pending set

-- Rebuild each message in lib.lua's layout, with its payload.
local msgs, payloads = {}, {}
local pos = 1
for si, id, plen, ulen in string.gmatch(ARGV[3], '([0-9]+) ([^ ]+) ([0-9]+) ([0-9]+)') do
  local s = shapes[tonumber(si)]
  local pend = pos + tonumber(plen)
  local uend = pend + tonumber(ulen)
  payloads[#payloads + 1] = string.sub(blob, pos, pend - 1)
  msgs[#msgs + 1] = {s[1], id, s[2], s[3], s[4], s[5], s[6], s[7], string.sub(blob, pend, uend - 1),
                     s[8], s[9], s[10]}
  pos = uend
end

-- True when no record of messages first..last exists yet (the usual case).
local EXISTS_CHUNK = 1000
local function none_exist(first, last)
  local names = {}
  for i = first, last do
    names[#names + 1] = block(msgs[i][1]).tprefix .. msgs[i][2]
  end
  for c = 1, #names, EXISTS_CHUNK do
    if redis.call('EXISTS', unpack(names, c, math.min(c + EXISTS_CHUNK - 1, #names))) > 0 then
      return false
    end
  end
  return true
end

local first = 1
for g, size in ipairs(sizes) do
  local last = first + size - 1
  local seen = {}
  local refused, at = nil, 0
  local absent = size > 1 and none_exist(first, last)
  for i = first, last do
    refused = check_message(msgs[i], seen, nil, absent)
    if refused then
      at = i - first + 1
      break
    end
  end
  local full, drops = nil, nil
  if not refused then full, drops = make_room(msgs, first, last, unflushed) end
  if refused then
    out[g + 1] = {refused, at}
  elseif full then
    out[g + 1] = {'full', full}
  else
    for _, d in ipairs(drops) do drop_oldest(d[1], d[2], t) end
    local states = {}
    for i = first, last do
      local state = store_message(msgs[i], payloads[i], t, ctx)
      if state == 'pending' then unflushed[msgs[i][1]] = (unflushed[msgs[i][1]] or 0) + 1 end
      states[#states + 1] = string.sub(state, 1, 1)
    end
    out[g + 1] = {'ok', table.concat(states)}
  end
  first = last + 1
end
wake_all(ctx)
return out
