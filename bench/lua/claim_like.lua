-- The shape of server/lua/claim.lua without authq's bookkeeping details: the best head
-- among six lanes, take it, a fencing token, the lease, a history entry, an event.
local best, best_score, best_lane
for i = 4, #KEYS do
  local head = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if head[1] and (best_score == nil or tonumber(head[2]) < best_score) then
    best, best_score, best_lane = head[1], tonumber(head[2]), KEYS[i]
  end
end
if not best then return {'EMPTY'} end
redis.call('ZREM', best_lane, best)
local token = redis.call('INCR', KEYS[2])
local req = 'bq:req:' .. best
redis.call('HINCRBY', req, 'v', 1)
redis.call('HSET', req, 'st', 'CLAIMED', 'h', ARGV[1], 'tok', token)
redis.call('ZADD', KEYS[1], token, best)
local entry = cmsgpack.pack({best, token, 'CLAIMED', ARGV[1]})
redis.call('RPUSH', 'bq:hist:' .. best, entry)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 50000, '*', 'm', entry)
return {'OK', best, token, redis.call('HGETALL', req)}
