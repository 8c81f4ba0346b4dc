-- window_decide: a supervisor or director approves or refuses a pending extended-hours
-- window (R9), once: a window already decided keeps its first decision.
-- KEYS[1] the window hash   KEYS[2] pending windows zset
-- ARGV[1] window id   ARGV[2] 'APPROVED' | 'REFUSED'   ARGV[3] decided by   ARGV[4] note
-- Returns {'OK', at_ms} | {'NOTFOUND'} | {'STATE', state, decided by}
-- Audited (R15): the staging stream and the action's packed record come after the keys
-- and arguments above (take_audit, _lib.lua).
local audit = take_audit()
local cur = redis.call('HMGET', KEYS[1], 'st', 'by')
if not cur[1] then
  return {'NOTFOUND'}
end
if cur[1] ~= 'PENDING' then
  return {'STATE', cur[1], cur[2] or ''}
end
local now_ms = math.floor(now_us() / 1000)
redis.call('HSET', KEYS[1], 'st', ARGV[2], 'by', ARGV[3], 'nt', ARGV[4], 'at', fmt(now_ms))
redis.call('ZREM', KEYS[2], ARGV[1])
stage_audit(audit)
return {'OK', now_ms}
