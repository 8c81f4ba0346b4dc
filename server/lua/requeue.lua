-- requeue: a claimed item goes back to its lane at its original score, either
-- handed back by its holder (mode 'release'), put back by the dispatcher because the
-- offer never reached its authorizer (mode 'put_back', server/dispatch.py), or because
-- its lease ran out (mode 'expire', run by the lease reaper of any server process).
-- A put-back restores the review flag rv to what it was before the claim (prv,
-- claim.lua): nobody opened the item, so the teller may still withdraw it (R4).
-- Released by its holder, or lapsed, it was offered: review has started, rv stays.
-- KEYS[1] req hash   KEYS[2] history list   KEYS[3] leases zset   KEYS[4] event stream
-- KEYS[5] per-state counts hash   KEYS[6] waiting-per-branch hash
-- ARGV[1] request id   ARGV[2] mode   ARGV[3] fencing token (release, put_back)
-- ARGV[4] actor   ARGV[5] note   ARGV[6] event stream max length
-- The lane key is read from the record (field ln); it shares the hash tag.
-- Returns {'OK', 'QUEUED', version, at_ms, holder, token} (the lease that ended: an
--         expiry's audit record names whose it was) | {'NOTFOUND'} | {'STATE', state}
--       | {'LEASE', reason, ...} (lease_refusal, _lib.lua)
--       | {'SKIP'} (expire: the lease is still running)
-- Audited (R15): the staging stream and the action's packed record come after
-- the keys and arguments above (take_audit, _lib.lua).
local audit = take_audit()
local cur = redis.call('HMGET', KEYS[1], 'st', 'tok', 'h', 'lu', 'sc', 'ln', 'br', 'prv', 'enq',
  'sub')
if not cur[1] then
  return {'NOTFOUND'}
end
if cur[1] ~= 'CLAIMED' then
  if ARGV[2] == 'expire' then return {'SKIP'} end
  return {'STATE', cur[1]}
end
local now_ms = math.floor(now_us() / 1000)
local event = 'RELEASED'
if ARGV[2] == 'expire' then
  if tonumber(cur[4]) > now_ms then return {'SKIP'} end
  event = 'LEASE_EXPIRED'
else
  local refusal = lease_refusal(cur[3], cur[2], nil, ARGV[4], ARGV[3], nil)
  if refusal then
    return refusal
  end
end
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'st', 'QUEUED')
redis.call('HDEL', KEYS[1], 'h', 'tok', 'lu')
if ARGV[2] == 'put_back' and cur[8] then
  redis.call('HSET', KEYS[1], 'rv', cur[8])
end
redis.call('ZREM', KEYS[3], ARGV[1])
-- It waited already: its wait goes on from when it joined (enq; sub for a record from
-- before enq), at its old place.
enqueue(cur[6], cur[5], ARGV[1], cur[9] or cur[10])
redis.call('HINCRBY', KEYS[6], cur[7], 1)
count_move(KEYS[5], 'CLAIMED', 'QUEUED')
record(KEYS[2], KEYS[4], ARGV[6],
  {ARGV[1], version, now_ms, event, ARGV[4], 'QUEUED', '', ARGV[5], {}, cur[7]})
if ARGV[2] == 'expire' then
  stage_audit(audit, {at_ms = now_ms, details = {holder = cur[3], token = tonumber(cur[2])}})
else
  stage_audit(audit)
end
return {'OK', 'QUEUED', version, now_ms, cur[3], tonumber(cur[2])}
