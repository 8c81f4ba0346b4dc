-- hand_back: during an emergency (R8) a supervisor hands a waiting request back to its
-- branch, which authorizes it on site; the request ends SENT_BACK with the reason.
-- Only a waiting request (QUEUED, or still awaiting on-site review) can be handed
-- back: one an authorizer holds is being decided.
-- KEYS[1] req hash   KEYS[2] history list   KEYS[3] event stream
-- KEYS[4] per-state counts hash   KEYS[5] waiting-per-branch hash
-- KEYS[6] the branch's set of requests awaiting on-site review
-- ARGV[1] request id   ARGV[2] supervisor id   ARGV[3] note   ARGV[4] event stream max length
-- ARGV[5] the branch the caller means (empty: any)
-- Returns {'OK', 'SENT_BACK', version, at_ms, branch} | {'NOTFOUND'} | {'STATE', state}
--       | {'BRANCH', branch}
-- Audited (R15): the staging stream and the action's packed record come after
-- the keys and arguments above (take_audit, _lib.lua).
local audit = take_audit()
local cur = redis.call('HMGET', KEYS[1], 'st', 'ln', 'br')
if not cur[1] then
  return {'NOTFOUND'}
end
if ARGV[5] ~= '' and cur[3] ~= ARGV[5] then
  return {'BRANCH', cur[3]}
end
if cur[1] ~= 'QUEUED' and cur[1] ~= 'PENDING_ONSITE_REVIEW' then
  return {'STATE', cur[1]}
end
local now_ms = math.floor(now_us() / 1000)
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'st', 'SENT_BACK')
unwait(cur[1], cur[2], ARGV[1], cur[3], KEYS[5], KEYS[6])
count_move(KEYS[4], cur[1], 'SENT_BACK')
record(KEYS[2], KEYS[3], ARGV[4],
  {ARGV[1], version, now_ms, 'HANDED_BACK', ARGV[2], 'SENT_BACK', '', ARGV[3], {}, cur[3]})
stage_audit(audit)
return {'OK', 'SENT_BACK', version, now_ms, cur[3]}
