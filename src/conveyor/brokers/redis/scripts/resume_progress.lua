-- resume_progress.lua: replace an ARCHIVED task's progress document, compare-and-set.
-- KEYS:    [1] the task record (hash; keys.task), in the queue's slot.
-- ARGV:    [1] the document expected now, [2] the new document.
-- Returns: 1 when replaced, 0 when the task is gone, not ARCHIVED, or its document changed.

local cur = redis.pcall('HMGET', KEYS[1], 'state', 'progress')
if type(cur) ~= 'table' or cur[1] ~= 'archived' or cur[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
return 1
