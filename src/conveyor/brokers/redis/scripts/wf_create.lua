-- wf_create.lua: store a workflow and enqueue its first steps, all or nothing.
-- KEYS:    one 13-key block per queue of the first steps (see lib.lua); then 5 keys: the
--          workflow record (its steps' states in field 'states'), its steps, the workflow index, the live set, the queue registry.
-- ARGV:    [1] workflow id, [2] graph (JSON), [3] retention (seconds, decimal), [4] the steps'
--          states, one letter per step (w waiting, q enqueued), [5] JSON array of the first
--          steps' messages (lib.lua layout), [6..] their payloads.
-- Returns: {'ok', now_us}; {'exists'} when the workflow id is taken; {'conflict' or
--          'duplicate', i} for a refused message i (nothing stored).

local nk = #KEYS
local WF, STEPS, INDEX, LIVE, REG = KEYS[nk - 4], KEYS[nk - 3], KEYS[nk - 2], KEYS[nk - 1], KEYS[nk]
if redis.call('EXISTS', WF) == 1 then return {'exists'} end
local msgs = cjson.decode(ARGV[5])
local seen = {}
for i, m in ipairs(msgs) do
  local refused = check_message(m, seen, nil, false)
  if refused then return {refused, i} end
end
local t = now()
local ctx = new_batch()
for i, m in ipairs(msgs) do
  store_message(m, ARGV[5 + i], t, ctx)
end
wake_all(ctx)
for qi, _ in pairs(ctx.woken) do redis.call('SADD', REG, queue_name(block(qi))) end
redis.call('HSET', WF, 'state', 'pending', 'graph', ARGV[2], 'created_at', t,
  'retention', ARGV[3], 'version', 0, 'states', ARGV[4])
redis.call('ZADD', INDEX, t, ARGV[1])
redis.call('SADD', LIVE, ARGV[1])
return {'ok', t}
