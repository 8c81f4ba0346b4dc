-- move_sweep: marks the pending moves (R6) whose confirmation window has passed as
-- lapsed (field lp) and returns them, so that each lapse is audited exactly once (by
-- whichever server process swept it). Run before every move operation; bounded per
-- call. The lapsed hash stays until its TTL, so a late confirmation is told it lapsed.
-- KEYS[1] index of pending moves (zset by deadline; also the prefix of the move keys)
-- ARGV[1] at most this many
-- Returns a list of {request id, rq, rs, cr, ex} (rq empty if the hash is gone)
-- Audited (R15): the staging stream and the template of a lapse's record come after the
-- keys and arguments above (take_audit, _lib.lua); each lapse swept is staged.
local lapse = take_audit()
local now_ms = math.floor(now_us() / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
local swept = {}
for _, rid in ipairs(due) do
  local key = KEYS[1] .. rid
  local mv = redis.call('HMGET', key, 'rq', 'rs', 'cr', 'ex')
  if mv[4] and tonumber(mv[4]) > now_ms then
    -- still running (cannot happen: the index follows ex): repair the index entry
    redis.call('ZADD', KEYS[1], mv[4], rid)
  else
    redis.call('ZREM', KEYS[1], rid)
    if mv[1] then
      redis.call('HSET', key, 'lp', '1')
    end
    swept[#swept + 1] = {rid, mv[1] or '', mv[2] or '', mv[3] or '0', mv[4] or '0'}
    stage_move_lapse(lapse, rid, mv[1] or '', mv[2] or '', mv[3] or '0', mv[4] or '0', now_ms)
  end
end
return swept
