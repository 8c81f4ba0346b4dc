-- image_fault: an image of a claimed item failed the full check (server/images/gate.py),
-- so before anyone is shown the item the system asks the teller for it again: the
-- claim made for the offer ends in NEEDS_SUPPLEMENT, recorded as done by 'system'
-- (decide.lua would record the authorizer, who never saw the item). Nobody opened it,
-- so the review flag rv goes back to what it was before the claim (prv, claim.lua):
-- the teller may still withdraw it, supplied or not (R4, cancel.lua).
-- KEYS[1] req hash   KEYS[2] history list   KEYS[3] leases zset   KEYS[4] event stream
-- KEYS[5] per-state counts hash
-- ARGV[1] request id   ARGV[2] fencing token of the claim   ARGV[3] note (the faults)
-- ARGV[4] image kinds to supply again, comma-separated   ARGV[5] event stream max length
-- Returns {'OK', 'NEEDS_SUPPLEMENT', version, at_ms} | {'NOTFOUND'} | {'STATE', state}
--       | {'LEASE', reason, ...}       the claim is not the current one any more
-- Audited (R15): the staging stream and the action's packed record come after
-- the keys and arguments above (take_audit, _lib.lua).
local audit = take_audit()
local cur = redis.call('HMGET', KEYS[1], 'st', 'tok', 'br', 'prv')
if not cur[1] then
  return {'NOTFOUND'}
end
if cur[1] ~= 'CLAIMED' then
  return {'STATE', cur[1]}
end
local refusal = lease_refusal(nil, cur[2], nil, nil, ARGV[2], nil)
if refusal then
  return refusal
end
local now_ms = math.floor(now_us() / 1000)
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'st', 'NEEDS_SUPPLEMENT', 'h', 'system')
if cur[4] then
  redis.call('HSET', KEYS[1], 'rv', cur[4])
end
redis.call('HDEL', KEYS[1], 'lu')
redis.call('ZREM', KEYS[3], ARGV[1])
count_move(KEYS[5], 'CLAIMED', 'NEEDS_SUPPLEMENT')
local kinds = {}
for kind in string.gmatch(ARGV[4], '[^,]+') do
  kinds[#kinds + 1] = kind
end
record(KEYS[2], KEYS[4], ARGV[5],
  {ARGV[1], version, now_ms, 'SUPPLEMENT_REQUESTED', 'system', 'NEEDS_SUPPLEMENT', '', ARGV[3],
   kinds, cur[3]})
stage_audit(audit)
return {'OK', 'NEEDS_SUPPLEMENT', version, now_ms}
