-- submit: enqueue a new request, or recognise a retry of one already stored.
-- KEYS[1] req hash   KEYS[2] history list   KEYS[3] lane zset   KEYS[4] event stream
-- KEYS[5] waiting-per-branch hash   KEYS[6] per-state counts hash
-- ARGV[1] request id   ARGV[2] fingerprint   ARGV[3] packed submission   ARGV[4] branch
-- ARGV[5] head start (us, from importance and urgency)   ARGV[6] teller id
-- ARGV[7] event stream max length
-- Returns {'OK', state, version, submitted_ms}
--       | {'DUP', state, version}          same id, same content: the earlier request
--       | {'CONFLICT', state}              same id, other content
local current = redis.call('HMGET', KEYS[1], 'fp', 'st', 'v')
if current[1] then
  if current[1] == ARGV[2] then
    return {'DUP', current[2], tonumber(current[3])}
  end
  return {'CONFLICT', current[2]}
end
local now = now_us()
local now_ms = math.floor(now / 1000)
local score = fmt(now - tonumber(ARGV[5]))
redis.call('HSET', KEYS[1], 'st', 'QUEUED', 'v', 1, 'd', ARGV[3], 'fp', ARGV[2],
  'sc', score, 'ln', KEYS[3], 'br', ARGV[4], 'sub', fmt(now_ms))
redis.call('ZADD', KEYS[3], score, ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
count_move(KEYS[6], nil, 'QUEUED')
record(KEYS[2], KEYS[4], ARGV[7],
  {ARGV[1], 1, now_ms, 'SUBMITTED', ARGV[6], 'QUEUED', '', '', {}, ARGV[4]})
return {'OK', 'QUEUED', 1, now_ms}
