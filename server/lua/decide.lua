-- decide: the holder of a claimed item approves it, rejects it or asks for images.
-- KEYS[1] req hash   KEYS[2] history list   KEYS[3] leases zset   KEYS[4] event stream
-- KEYS[5] per-state counts hash
-- ARGV[1] request id   ARGV[2] fencing token   ARGV[3] authorizer id
-- ARGV[4] new state (APPROVED | REJECTED | NEEDS_SUPPLEMENT)   ARGV[5] event name
-- ARGV[6] reason code   ARGV[7] note   ARGV[8] requested kinds, comma-separated
-- ARGV[9] event stream max length
-- Returns {'OK', state, version, at_ms}
--       | {'DUP', state, version}          this very decision was already recorded
--       | {'NOTFOUND'} | {'STATE', state}
--       | {'LEASE', reason, ...}           not the holder, stale token, lease over
--       | {'DUTY', reason}                 the authorizer submitted or reviewed it (R11)
-- Audited (R15): the staging stream and the action's packed record come after
-- the keys and arguments above (take_audit, _lib.lua).
local audit = take_audit()
local cur = redis.call('HMGET', KEYS[1], 'st', 'tok', 'h', 'v', 'lu', 'br', 'tl', 'rvw')
if not cur[1] then
  return {'NOTFOUND'}
end
if cur[7] == ARGV[3] then
  return {'DUTY', ARGV[3] .. ' submitted this request'}
end
if cur[8] == ARGV[3] then
  return {'DUTY', ARGV[3] .. ' reviewed this request on site'}
end
if cur[1] == ARGV[4] and cur[2] == ARGV[2] and cur[3] == ARGV[3] then
  -- A retry after a lost reply: the decision stands once.
  return {'DUP', cur[1], tonumber(cur[4])}
end
if cur[1] ~= 'CLAIMED' then
  return {'STATE', cur[1]}
end
local now_ms = math.floor(now_us() / 1000)
local refusal = lease_refusal(cur[3], cur[2], cur[5], ARGV[3], ARGV[2], now_ms)
if refusal then
  return refusal
end
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'st', ARGV[4])
redis.call('HDEL', KEYS[1], 'lu')
redis.call('ZREM', KEYS[3], ARGV[1])
count_move(KEYS[5], 'CLAIMED', ARGV[4])
local kinds = {}
for kind in string.gmatch(ARGV[8], '[^,]+') do
  kinds[#kinds + 1] = kind
end
record(KEYS[2], KEYS[4], ARGV[9],
  {ARGV[1], version, now_ms, ARGV[5], ARGV[3], ARGV[4], ARGV[6], ARGV[7], kinds, cur[6]})
stage_audit(audit)
return {'OK', ARGV[4], version, now_ms}
