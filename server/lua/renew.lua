-- renew: the holder extends the lease of a claimed item.
-- KEYS[1] req hash   KEYS[2] leases zset
-- ARGV[1] request id   ARGV[2] fencing token   ARGV[3] authorizer id   ARGV[4] lease (ms)
-- Returns {'OK', lease_deadline_ms} | {'NOTFOUND'} | {'STATE', state}
--       | {'LEASE', reason, ...} (lease_refusal, _lib.lua)
local cur = redis.call('HMGET', KEYS[1], 'st', 'tok', 'h', 'lu')
if not cur[1] then
  return {'NOTFOUND'}
end
if cur[1] ~= 'CLAIMED' then
  return {'STATE', cur[1]}
end
local now_ms = math.floor(now_us() / 1000)
local refusal = lease_refusal(cur[3], cur[2], cur[4], ARGV[3], ARGV[2], now_ms)
if refusal then
  return refusal
end
local deadline = now_ms + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'lu', fmt(deadline))
redis.call('ZADD', KEYS[2], fmt(deadline), ARGV[1])
return {'OK', deadline}
