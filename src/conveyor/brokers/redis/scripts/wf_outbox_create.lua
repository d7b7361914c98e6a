-- wf_outbox_create.lua: store a workflow on Redis Cluster, its first steps in its outbox.
-- Every key is in the workflow's hash slot; the steps' queues are not, so the first steps are
-- not enqueued here: their indices go to the outbox, which the client drains next (enqueue by
-- the steps' task ids, so a repeated drain stores nothing twice).
-- KEYS:    [1] the workflow record, [2] its steps, [3] its outbox.
-- ARGV:    [1] graph (JSON), [2] retention (seconds, decimal), [3] the steps' states, one
--          letter per step (w waiting, q enqueued), [4] JSON array of the first steps' indices.
-- Returns: {'ok', now_us}; {'exists', graph} when the workflow id is taken (the stored graph,
--          so a repeated create of the same workflow is told apart from a reused id).

local WF, STEPS, OUTBOX = KEYS[1], KEYS[2], KEYS[3]
local stored = redis.call('HGET', WF, 'graph')
if stored then return {'exists', stored} end
local t = now()
redis.call('HSET', WF, 'state', 'pending', 'graph', ARGV[1], 'created_at', t,
  'retention', ARGV[2], 'version', 0, 'states', ARGV[3])
for _, i in ipairs(cjson.decode(ARGV[4])) do redis.call('SADD', OUTBOX, i) end
return {'ok', t}
