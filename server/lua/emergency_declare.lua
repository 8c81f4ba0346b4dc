-- emergency_declare: a supervisor puts the center, or some branches, on on-site
-- authorization (R8). New submissions in scope get a fallback answer (submit.lua).
-- KEYS[1] emergency id counter   KEYS[2] active emergencies zset
-- KEYS[3..] the fallback sets of the scopes: "*" (center-wide) or one per branch
-- ARGV[1] reason   ARGV[2] declared by   ARGV[3] branches, comma-separated ("" = all)
-- ARGV[4] emergency key prefix
-- Returns {id, declared_at_ms}
local n = redis.call('INCR', KEYS[1])
local id = 'E' .. n
local now_ms = math.floor(now_us() / 1000)
redis.call('HSET', ARGV[4] .. id, 'reason', ARGV[1], 'by', ARGV[2], 'at', fmt(now_ms),
  'branches', ARGV[3])
redis.call('ZADD', KEYS[2], fmt(now_ms), id)
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], id)
end
return {id, now_ms}
