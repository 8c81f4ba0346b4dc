-- submit: enqueue a new request, or recognise a retry of one already stored.
-- KEYS[1] req hash   KEYS[2] lane zset   KEYS[3] event stream
-- KEYS[4] waiting-per-branch hash   KEYS[5] per-state counts hash
-- KEYS[6] the branch's set of requests awaiting on-site review
-- KEYS[7] center-wide emergencies   KEYS[8] the branch's emergencies (R8)
-- KEYS[9] the request's archive marker: an id archived and gone from Redis stays used
-- KEYS[10] a local fallback reported under this id (R8): the branch authorized that
-- transaction on site, so the center must never hold it too (fallback_report.lua)
-- (No history list yet: the SUBMITTED entry is rebuilt from the record.)
-- ARGV[1] request id   ARGV[2] fingerprint   ARGV[3] packed submission   ARGV[4] branch
-- ARGV[5] head start (us, from importance and urgency)   ARGV[6] teller id
-- ARGV[7] event stream max length   ARGV[8] "1": on-site review first (R2), the item
-- waits outside the queue (its score is kept for when it is confirmed)
-- ARGV[9] the amount in local-currency minor units (checked against ceilings)
-- Returns {'OK', state, version, submitted_ms}
--       | {'DUP', state, version}          same id, same content: the earlier request
--       | {'CONFLICT', state}              same id, other content
--       | {'FALLBACK', emergency id}       an emergency is in force: nothing stored
--       | {'ARCHIVED'}                     the id belongs to an archived request
--       | {'ONSITE'}                       the id was reported as a local fallback
-- Audited (R15): the staging stream and the action's packed record come after
-- the keys and arguments above (take_audit, _lib.lua).
local audit = take_audit()
local current = redis.call('HMGET', KEYS[1], 'fp', 'st', 'v')
if current[1] then
  if current[1] == ARGV[2] then
    return {'DUP', current[2], tonumber(current[3])}
  end
  return {'CONFLICT', current[2]}
end
if redis.call('EXISTS', KEYS[9]) == 1 then
  return {'ARCHIVED'}
end
if redis.call('EXISTS', KEYS[10]) == 1 then
  return {'ONSITE'}
end
local emergency = redis.call('SRANDMEMBER', KEYS[7]) or redis.call('SRANDMEMBER', KEYS[8])
if emergency then
  return {'FALLBACK', emergency}
end
local now = now_us()
local now_ms = math.floor(now / 1000)
local score = fmt(now - tonumber(ARGV[5]))
local state = 'QUEUED'
if ARGV[8] == '1' then
  state = 'PENDING_ONSITE_REVIEW'
end
redis.call('HSET', KEYS[1], 'st', state, 'v', 1, 'd', ARGV[3], 'fp', ARGV[2],
  'sc', score, 'ln', KEYS[2], 'br', ARGV[4], 'sub', fmt(now_ms), 'tl', ARGV[6],
  'am', ARGV[9])
if state == 'QUEUED' then
  -- enq: when it joined the queue, which the backlog's oldest wait counts from (R8)
  redis.call('HSET', KEYS[1], 'enq', fmt(now_ms))
  enqueue(KEYS[2], score, ARGV[1], now_ms)
  redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
else
  redis.call('ZADD', KEYS[6], now_ms, ARGV[1])
end
count_move(KEYS[5], nil, state)
emit(KEYS[3], ARGV[7], {ARGV[1], 1, now_ms, 'SUBMITTED', ARGV[6], state, '', '', {}, ARGV[4]})
stage_audit(audit)
return {'OK', state, 1, now_ms}
