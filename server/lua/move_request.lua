-- move_request: one supervisor or director asks to move a waiting request to the front
-- of the queue (R6). Nothing moves yet: a second person must confirm (move_confirm)
-- before the deadline. One pending move per request.
-- KEYS[1] req hash   KEYS[2] pending-move hash   KEYS[3] index of pending moves (zset)
-- ARGV[1] request id   ARGV[2] requester   ARGV[3] reason   ARGV[4] window (ms)
-- ARGV[5] how long a lapsed move is kept for its audit record (ms)
-- The pending move is a hash {rq requester, rs reason, cr created_ms, ex expires_ms,
-- lp '1' once its lapse was seen};
-- the index scores it by ex so that lapsed moves are found (move_sweep). Its Redis
-- TTL (window + keep) only collects garbage: ex is what decides that a move lapsed.
-- A lapsed move (ex passed; lp set once move_sweep or move_confirm saw it) is replaced.
-- Returns {'OK', created_ms, expires_ms}
--       | {'NOTFOUND'} | {'STATE', state}
--       | {'PENDING', requester, reason, created_ms, expires_ms} (one is pending already)
-- Audited (R15): the staging stream, then the action's packed record and the template
-- of a lapse's, come after the keys and arguments above (take_audits, _lib.lua). The
-- request's record gains the deadline; a replaced lapse not yet seen is staged first.
local audit, lapse = unpack(take_audits(2))
local st = redis.call('HGET', KEYS[1], 'st')
if not st then
  return {'NOTFOUND'}
end
if st ~= 'QUEUED' then
  return {'STATE', st}
end
local now_ms = math.floor(now_us() / 1000)
local old = redis.call('HMGET', KEYS[2], 'rq', 'rs', 'cr', 'ex', 'lp')
if old[1] then
  if tonumber(old[4]) > now_ms then
    return {'PENDING', old[1], old[2], old[3], old[4]}
  end
  if not old[5] then  -- a lapse no step has seen yet: this one stages it
    stage_move_lapse(lapse, ARGV[1], old[1], old[2], old[3], old[4], now_ms)
  end
end
local expires = now_ms + tonumber(ARGV[4])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'rq', ARGV[2], 'rs', ARGV[3], 'cr', fmt(now_ms),
  'ex', fmt(expires))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) + tonumber(ARGV[5]))
redis.call('ZADD', KEYS[3], fmt(expires), ARGV[1])
stage_audit(audit, {details = {expires_at_ms = expires}})
return {'OK', fmt(now_ms), fmt(expires)}
