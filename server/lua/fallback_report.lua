-- fallback_report: stores one local fallback a teller reported (R8), once. A retried
-- upload changes nothing; the on-site outcome may arrive in a later upload and is then
-- added, once.
-- KEYS[1] the record hash   KEYS[2] the branch's index   KEYS[3] the index of all
-- KEYS[4] the request hash of the same id   KEYS[5] its archive marker (either one
--         existing means the center also holds the request: it must not be decided twice)
-- ARGV[1] request id   ARGV[2] digest of the event (all but the on-site outcome)
-- ARGV[3] occurred at (ms)   ARGV[4] on-site outcome ("" = not yet)
-- ARGV[5] on-site authorizer   ARGV[6] on-site note   ARGV[7] on-site at (ms)
-- ARGV[8..] the event's fields as name, value pairs
-- Returns {status, also_submitted (0 or 1), detail}: status STORED, DUPLICATE,
-- OUTCOME_ADDED or CONFLICT (detail says what differs).
local also = 0
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('EXISTS', KEYS[5]) == 1 then
  also = 1
end
local outcome = ARGV[4]

local function set_outcome()
  redis.call('HSET', KEYS[1], 'onsite_outcome', outcome, 'onsite_authorizer', ARGV[5],
    'onsite_note', ARGV[6], 'onsite_at', ARGV[7])
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  local now_ms = math.floor(now_us() / 1000)
  local fields = {'digest', ARGV[2], 'occurred_at', ARGV[3], 'received_at', fmt(now_ms),
    'also_submitted', tostring(also)}
  for i = 8, #ARGV do
    fields[#fields + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  if outcome ~= '' then
    set_outcome()
  end
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  return {'STORED', also, ''}
end

if also == 1 then
  -- The request reached the center after the fallback was first reported.
  redis.call('HSET', KEYS[1], 'also_submitted', '1')
end
if redis.call('HGET', KEYS[1], 'digest') ~= ARGV[2] then
  return {'CONFLICT', also, 'a fallback with this request id was reported with other content'}
end
local held = redis.call('HMGET', KEYS[1], 'onsite_outcome', 'onsite_authorizer')
local held_outcome = held[1] or ''
if outcome == '' or (outcome == held_outcome and ARGV[5] == held[2]) then
  return {'DUPLICATE', also, ''}
end
if held_outcome == '' then
  set_outcome()
  return {'OUTCOME_ADDED', also, ''}
end
return {'CONFLICT', also, 'its on-site outcome was reported as ' .. held_outcome ..
  ' by ' .. (held[2] or '') .. ' already'}
