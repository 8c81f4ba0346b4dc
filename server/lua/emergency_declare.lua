-- emergency_declare: a supervisor puts the center, or some branches, on on-site
-- authorization (R8). New submissions in scope get a fallback answer (submit.lua).
-- KEYS[1] emergency id counter   KEYS[2] active emergencies zset
-- KEYS[3..] the fallback sets of the scopes: "*" (center-wide) or one per branch
-- ARGV[1] reason   ARGV[2] declared by   ARGV[3] branches, comma-separated ("" = all)
-- ARGV[4] emergency key prefix
-- Returns {'OK', id, declared_at_ms}
-- Audited (R15): the staging stream and the action's packed record come after the keys
-- and arguments above (take_audit, _lib.lua); the record gains the emergency's id.
local audit = take_audit()
local n = redis.call('INCR', KEYS[1])
local id = 'E' .. n
local now_ms = math.floor(now_us() / 1000)
redis.call('HSET', ARGV[4] .. id, 'reason', ARGV[1], 'by', ARGV[2], 'at', fmt(now_ms),
  'branches', ARGV[3])
redis.call('ZADD', KEYS[2], fmt(now_ms), id)
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], id)
end
stage_audit(audit, {details = {emergency_id = id}})
return {'OK', id, now_ms}
