-- claim: hand the best waiting item among the given lanes to one authorizer, under a
-- lease with a fresh fencing token. Cost: one ZRANGE per lane, independent of depth.
-- KEYS[1] leases zset   KEYS[2] event stream   KEYS[3] fencing counter
-- KEYS[4] waiting-per-branch hash   KEYS[5] per-state counts hash
-- KEYS[6] the set of authorizers who are away   KEYS[7..] lanes
-- ARGV[1] authorizer id   ARGV[2] lease (ms)   ARGV[3] event stream max length
-- ARGV[4] request key prefix   ARGV[5] history key prefix
-- The claimed item's own keys are derived from its id (prefix .. id): every key
-- carries the same hash tag, so the script stays within one Cluster slot.
-- Separation of duties (R11): an item its own submitter or on-site reviewer would
-- take is passed over;
-- only then are a few more of that lane looked at, so the usual cost stays one
-- ZRANGE and one HGET per lane.
-- Returns {'OK', id, token, lease_deadline_ms, version, HGETALL of req, history list}
--       | {'EMPTY'} | {'AWAY'}
if redis.call('SISMEMBER', KEYS[6], ARGV[1]) == 1 then
  return {'AWAY'}
end
local SKIP_LIMIT = 16
local function involved(id)
  local people = redis.call('HMGET', ARGV[4] .. id, 'tl', 'rvw')
  return people[1] == ARGV[1] or people[2] == ARGV[1]
end
local best, best_score, best_lane
for i = 7, #KEYS do
  local head = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if head[1] and involved(head[1]) then
    head = {}
    local next_ones = redis.call('ZRANGE', KEYS[i], 1, SKIP_LIMIT, 'WITHSCORES')
    for j = 1, #next_ones, 2 do
      if not involved(next_ones[j]) then
        head = {next_ones[j], next_ones[j + 1]}
        break
      end
    end
  end
  if head[1] then
    local score = tonumber(head[2])
    if best_score == nil or score < best_score then
      best, best_score, best_lane = head[1], score, KEYS[i]
    end
  end
end
if not best then
  return {'EMPTY'}
end
local req = ARGV[4] .. best
local hist = ARGV[5] .. best
redis.call('ZREM', best_lane, best)
local now_ms = math.floor(now_us() / 1000)
local token = redis.call('INCR', KEYS[3])
local deadline = now_ms + tonumber(ARGV[2])
local version = redis.call('HINCRBY', req, 'v', 1)
redis.call('HSET', req, 'st', 'CLAIMED', 'h', ARGV[1], 'tok', token, 'lu', fmt(deadline),
  'rv', '1')
redis.call('ZADD', KEYS[1], fmt(deadline), best)
local branch = redis.call('HGET', req, 'br')
redis.call('HINCRBY', KEYS[4], branch, -1)
count_move(KEYS[5], 'QUEUED', 'CLAIMED')
record(hist, KEYS[2], ARGV[3],
  {best, version, now_ms, 'CLAIMED', ARGV[1], 'CLAIMED', '', '', {}, branch})
return {'OK', best, token, deadline, version, redis.call('HGETALL', req),
  redis.call('LRANGE', hist, 0, -1)}
