-- archive_done: marks a request archived once its files are durable; from then on its
-- hot keys may be removed after the keep-hot window (archive_purge.lua).
-- KEYS[1] archive marker hash   KEYS[2] ended-not-archived zset   KEYS[3] archived-hot zset
-- KEYS[4] per-day manifest heads hash
-- ARGV[1] request id   ARGV[2] day (YYYY-MM-DD)   ARGV[3] final state   ARGV[4] branch
-- ARGV[5] manifest line count after writing   ARGV[6] manifest chain after writing
-- Returns {'OK', at_ms} | {'DONE', day} it was already marked (a late duplicate)
redis.call('ZREM', KEYS[2], ARGV[1])
local m = redis.call('HMGET', KEYS[1], 'st', 'day')
if m[1] == 'done' then
  return {'DONE', m[2]}
end
local now_ms = math.floor(now_us() / 1000)
redis.call('HDEL', KEYS[1], 'own', 'until')
redis.call('HSET', KEYS[1], 'st', 'done', 'day', ARGV[2], 'fs', ARGV[3], 'br', ARGV[4],
  'at', fmt(now_ms))
redis.call('ZADD', KEYS[3], now_ms, ARGV[1])
-- The head only moves forward: processes may finish out of the order they appended.
local head = redis.call('HGET', KEYS[4], ARGV[2])
if not head or tonumber(string.match(head, '^(%d+)')) < tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[4], ARGV[2], ARGV[5] .. ' ' .. ARGV[6])
end
return {'OK', now_ms}
