-- move_confirm: a second supervisor or director confirms a pending move (R6); only now
-- does the request change place. Re-checks everything atomically: the move is pending
-- and has not lapsed, the confirmer is not the requester, the request still waits.
-- The request goes to the front: its new score is one microsecond below both the
-- smallest lane head and zero. Every item never moved scores above zero (its time in
-- microseconds since the epoch less its head start), so it is offered next and
-- nothing overtakes it: not later work, nor older work coming back to its place (a
-- release, a supply, an on-site confirmation). A move confirmed later goes ahead of
-- it. It stays in its own lane, and its field sc is updated too, so that a hand-back
-- or a lapsed lease (requeue) keeps the new place.
-- KEYS[1] req hash   KEYS[2] history list   KEYS[3] pending-move hash
-- KEYS[4] index of pending moves   KEYS[5] event stream   KEYS[6] the set of lanes
-- ARGV[1] request id   ARGV[2] confirmer   ARGV[3] event stream max length
-- Returns {'OK', version, at_ms, rq, rs, cr, ex, old_score, new_score}
--       | {'NOMOVE'} | {'LAPSED', rq, rs, cr, ex, first} (first: '1' when this call
--         found the lapse before move_sweep did, so it is to be audited now)
--       | {'SAME', rq} | {'NOTFOUND'} | {'STATE', state, rq, rs, cr, ex}
-- Audited (R15): the staging stream, then the action's packed record and the template
-- of a lapse's, come after the keys and arguments above (take_audits, _lib.lua). The
-- confirmation's record gains the move and both scores; a lapse seen first is staged.
local audit, lapse = unpack(take_audits(2))
local mv = redis.call('HMGET', KEYS[3], 'rq', 'rs', 'cr', 'ex', 'lp')
if not mv[1] then
  return {'NOMOVE'}
end
local now = now_us()
local now_ms = math.floor(now / 1000)
if tonumber(mv[4]) <= now_ms then
  local first = '0'
  if not mv[5] then
    first = '1'
    redis.call('HSET', KEYS[3], 'lp', '1')
    redis.call('ZREM', KEYS[4], ARGV[1])
    stage_move_lapse(lapse, ARGV[1], mv[1], mv[2], mv[3], mv[4], now_ms)
  end
  return {'LAPSED', mv[1], mv[2], mv[3], mv[4], first}
end
if mv[1] == ARGV[2] then
  return {'SAME', mv[1]}
end
local cur = redis.call('HMGET', KEYS[1], 'st', 'sc', 'ln', 'br')
if not cur[1] then
  return {'NOTFOUND'}
end
if cur[1] ~= 'QUEUED' then
  return {'STATE', cur[1], mv[1], mv[2], mv[3], mv[4]}
end
local target = 0
for _, lane in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  local head = redis.call('ZRANGE', lane, 0, 0, 'WITHSCORES')
  if head[1] and tonumber(head[2]) < target then
    target = tonumber(head[2])
  end
end
target = target - 1
enqueue(cur[3], fmt(target), ARGV[1])  -- its wait goes on: enq and its since entry stay
redis.call('HSET', KEYS[1], 'sc', fmt(target))
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
record(KEYS[2], KEYS[5], ARGV[3],
  {ARGV[1], version, now_ms, 'REPRIORITIZED', ARGV[2], 'QUEUED', '',
   'moved to the front at the request of ' .. mv[1] .. ': ' .. mv[2], {}, cur[4]})
stage_audit(audit, {details = {requester = mv[1], reason = mv[2],
  old_score_us = tonumber(cur[2]), new_score_us = target}})
return {'OK', version, now_ms, mv[1], mv[2], mv[3], mv[4], cur[2], fmt(target)}
