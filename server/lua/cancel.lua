-- cancel: the teller withdraws a request that no authorizer has opened (R4): one that
-- waits in the queue or for its on-site review, or one the image check sent back for
-- images (NEEDS_SUPPLEMENT by 'system', image_fault.lua), which waits nowhere.
-- KEYS[1] req hash   KEYS[2] history list   KEYS[3] event stream
-- KEYS[4] per-state counts hash   KEYS[5] waiting-per-branch hash
-- KEYS[6] the branch's set of requests awaiting on-site review
-- ARGV[1] request id   ARGV[2] teller id   ARGV[3] note   ARGV[4] event stream max length
-- Returns {'OK', 'CANCELLED', version, at_ms} | {'NOTFOUND'}
--       | {'DUP', 'CANCELLED', version} | {'STATE', state, review_started}
-- Audited (R15): the staging stream and the action's packed record come after
-- the keys and arguments above (take_audit, _lib.lua).
local audit = take_audit()
local cur = redis.call('HMGET', KEYS[1], 'st', 'rv', 'ln', 'br', 'v')
if not cur[1] then
  return {'NOTFOUND'}
end
if cur[1] == 'CANCELLED' then
  return {'DUP', 'CANCELLED', tonumber(cur[5])}
end
-- rv ('1' once an authorizer opened it) tells a put-back from a hand-back, and the image
-- check's send-back from an authorizer's request for images.
local waiting = cur[1] == 'QUEUED' or cur[1] == 'NEEDS_SUPPLEMENT'
if cur[1] ~= 'PENDING_ONSITE_REVIEW' and (not waiting or cur[2] == '1') then
  return {'STATE', cur[1], cur[2] or '0'}
end
local now_ms = math.floor(now_us() / 1000)
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'st', 'CANCELLED')
unwait(cur[1], cur[3], ARGV[1], cur[4], KEYS[5], KEYS[6])
count_move(KEYS[4], cur[1], 'CANCELLED')
record(KEYS[2], KEYS[3], ARGV[4],
  {ARGV[1], version, now_ms, 'CANCELLED', ARGV[2], 'CANCELLED', '', ARGV[3], {}, cur[4]})
stage_audit(audit)
return {'OK', 'CANCELLED', version, now_ms}
