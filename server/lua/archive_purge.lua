-- archive_purge: removes the hot keys of an archived request once the keep-hot window
-- has passed. The archive marker stays: it says where the record went.
-- KEYS[1] archive marker hash   KEYS[2] req hash   KEYS[3] history list
-- KEYS[4] archived-hot zset
-- ARGV[1] request id   ARGV[2] keep-hot window (ms)
-- Returns {'OK'} | {'EARLY', due_ms} | {'NOTDONE'} not archived: keys kept
local m = redis.call('HMGET', KEYS[1], 'st', 'at')
if m[1] ~= 'done' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return {'NOTDONE'}
end
local due = tonumber(m[2]) + tonumber(ARGV[2])
if due > math.floor(now_us() / 1000) then
  return {'EARLY', fmt(due)}
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
return {'OK'}
