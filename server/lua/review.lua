-- review: an on-site reviewer of the branch confirms a request (it joins the central
-- queue at the place its submission time gives it) or sends it back (R2, R11).
-- KEYS[1] req hash   KEYS[2] history list   KEYS[3] event stream
-- KEYS[4] per-state counts hash   KEYS[5] waiting-per-branch hash
-- KEYS[6] the branch's set of requests awaiting on-site review
-- ARGV[1] request id   ARGV[2] reviewer id   ARGV[3] reviewer's branch
-- ARGV[4] CONFIRM | SEND_BACK   ARGV[5] checks, comma-separated   ARGV[6] note
-- ARGV[7] event stream max length
-- Returns {'OK', state, version, at_ms} | {'NOTFOUND'} | {'STATE', state}
--       | {'BRANCH', branch}               another branch's request
--       | {'DUTY', reason}                 the reviewer submitted it (R11)
-- Audited (R15): the staging stream and the action's packed record come after
-- the keys and arguments above (take_audit, _lib.lua).
local audit = take_audit()
local cur = redis.call('HMGET', KEYS[1], 'st', 'br', 'tl', 'sc', 'ln')
if not cur[1] then
  return {'NOTFOUND'}
end
if cur[2] ~= ARGV[3] then
  return {'BRANCH', cur[2]}
end
if cur[3] == ARGV[2] then
  return {'DUTY', ARGV[2] .. ' submitted this request'}
end
if cur[1] ~= 'PENDING_ONSITE_REVIEW' then
  return {'STATE', cur[1]}
end
local now_ms = math.floor(now_us() / 1000)
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('ZREM', KEYS[6], ARGV[1])
local state, event = 'SENT_BACK', 'SENT_BACK'
if ARGV[4] == 'CONFIRM' then
  state, event = 'QUEUED', 'ONSITE_CONFIRMED'
  -- It joins the queue now: the wait for the reviewer is not the queue's (R8 backlog).
  redis.call('HSET', KEYS[1], 'enq', fmt(now_ms))
  enqueue(cur[5], cur[4], ARGV[1], now_ms)
  redis.call('HINCRBY', KEYS[5], cur[2], 1)
end
redis.call('HSET', KEYS[1], 'st', state, 'rvw', ARGV[2])
count_move(KEYS[4], 'PENDING_ONSITE_REVIEW', state)
local note = ARGV[6]
if ARGV[5] ~= '' then
  note = 'checked: ' .. ARGV[5] .. (note ~= '' and ('; ' .. note) or '')
end
record(KEYS[2], KEYS[3], ARGV[7],
  {ARGV[1], version, now_ms, event, ARGV[2], state, '', note, {}, cur[2]})
stage_audit(audit)
return {'OK', state, version, now_ms}
