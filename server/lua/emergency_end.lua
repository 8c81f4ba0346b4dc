-- emergency_end: a supervisor ends an emergency; submissions are queued again.
-- KEYS[1] the emergency hash   KEYS[2] active emergencies zset
-- KEYS[3..] the fallback sets of its scopes
-- ARGV[1] emergency id   ARGV[2] ended by   ARGV[3] note
-- Returns {'OK', ended_at_ms} | {'NOTFOUND'} | {'ENDED', ended_at_ms}
-- Audited (R15): the staging stream and the action's packed record come after the keys
-- and arguments above (take_audit, _lib.lua).
local audit = take_audit()
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'NOTFOUND'}
end
local ended = redis.call('HGET', KEYS[1], 'ended_at')
if ended then
  return {'ENDED', tonumber(ended)}
end
local now_ms = math.floor(now_us() / 1000)
redis.call('HSET', KEYS[1], 'ended_by', ARGV[2], 'ended_at', fmt(now_ms), 'note', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
for i = 3, #KEYS do
  redis.call('SREM', KEYS[i], ARGV[1])
end
stage_audit(audit)
return {'OK', now_ms}
