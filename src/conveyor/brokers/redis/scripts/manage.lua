-- manage.lua: inspector operations on one task or on every task in one state of a queue.
-- KEYS:    one 13-key block (see lib.lua).
-- ARGV:    [1] operation: 'delete', 'run' or 'archive'; [2] 'one' or 'all';
--          [3] the task id ('one') or the state whose tasks to act on ('all');
--          [4] 'all' only: the most tasks to act on in this run (the caller repeats the call,
--          so a state of millions never blocks Redis for long); [5] 'all', optional: how many
--          tasks at the head of the state to pass over (steps left alone by earlier runs);
--          [6] 'all', optional: '1' to leave workflow steps (ids 'wf.<id>.<n>') alone and
--          return their ids instead (the caller archives or deletes each with its workflow's
--          failure, wf_manage.lua).
-- Returns: 'one': 1 done, 0 no such task, or the task's state when the operation does not apply.
--          'all': {how many tasks changed, how many are left in the state past those passed
--          over, then the ids of the workflow steps left alone}.

local b = block(1)
local op, mode = ARGV[1], ARGV[2]
local t = now()
local APPLIES = {
  delete = {pending = true, scheduled = true, retry = true, archived = true, completed = true},
  run = {scheduled = true, retry = true, archived = true},
  archive = {pending = true, scheduled = true, retry = true},
}
local woke = false

local function apply(id, state)
  local tkey = b.tprefix .. id
  unlink(b, id, state)
  if op == 'delete' then
    release_unique(b, id, redis.pcall('HGET', tkey, 'unique_key'))  -- a non-hash key has none
    redis.call('DEL', tkey)
  elseif op == 'run' then
    to_pending(b, id, tail_score(b, t), t, t)
    woke = true
  else
    redis.call('ZADD', b.archived, t, id)
    redis.call('HSET', tkey, 'state', 'archived', 'since', t)
  end
end

if mode == 'one' then
  local id = ARGV[3]
  local state = redis.call('HGET', b.tprefix .. id, 'state')
  if state == false then return 0 end
  if not APPLIES[op][state] then return state end
  apply(id, state)
  if woke then wake(b) end
  return 1
end

local state = ARGV[3]
if not APPLIES[op][state] then return {0, 0} end
local set = b[STATE_SET[state]]
local skip = tonumber(ARGV[5] or '0') or 0
local leave_steps = ARGV[6] == '1'
local ids = redis.call('ZRANGE', set, skip, skip + tonumber(ARGV[4]) - 1)
local out = {0, 0}
for _, id in ipairs(ids) do
  if leave_steps and string.sub(id, 1, 3) == 'wf.' then
    out[#out + 1] = id
  else
    apply(id, state)
    out[1] = out[1] + 1
  end
end
if woke then wake(b) end
out[2] = math.max(redis.call('ZCARD', set) - skip - (#out - 2), 0)
return out
