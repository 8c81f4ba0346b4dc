-- supply: the teller answers a supplement request; the item returns to its lane at
-- its original score, so it goes ahead of newer work of its class.
-- KEYS[1] req hash   KEYS[2] history list   KEYS[3] event stream
-- KEYS[4] per-state counts hash   KEYS[5] waiting-per-branch hash
-- ARGV[1] request id   ARGV[2] version the caller checked   ARGV[3] packed image list
-- ARGV[4] teller id   ARGV[5] note   ARGV[6] event stream max length
-- Returns {'OK', 'QUEUED', version, at_ms} | {'NOTFOUND'} | {'STATE', state}
--       | {'VERSION', version}             changed since the caller read it
--       | {'DUP', 'QUEUED', version}       this very supply was already recorded
-- Audited (R15): the staging stream and the action's packed record come after
-- the keys and arguments above (take_audit, _lib.lua).
local audit = take_audit()
local cur = redis.call('HMGET', KEYS[1], 'st', 'v', 'sc', 'ln', 'br')
if not cur[1] then
  return {'NOTFOUND'}
end
if cur[1] == 'QUEUED' and tonumber(cur[2]) == tonumber(ARGV[2]) + 1
    and redis.call('HGET', KEYS[1], 'sx') == ARGV[3] then
  -- A retry after a lost reply. Another supply prepared from the same read (a second
  -- teller of the branch, other images) is refused below: its images were not stored.
  return {'DUP', 'QUEUED', tonumber(cur[2])}
end
if cur[1] ~= 'NEEDS_SUPPLEMENT' then
  return {'STATE', cur[1]}
end
if cur[2] ~= ARGV[2] then
  return {'VERSION', tonumber(cur[2])}
end
local now_ms = math.floor(now_us() / 1000)
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
-- enq: it joins the queue again now; the wait for the teller is not the queue's (R8
-- backlog), though its score keeps its place.
redis.call('HSET', KEYS[1], 'st', 'QUEUED', 'sx', ARGV[3], 'enq', fmt(now_ms))
enqueue(cur[4], cur[3], ARGV[1], now_ms)
redis.call('HINCRBY', KEYS[5], cur[5], 1)
count_move(KEYS[4], 'NEEDS_SUPPLEMENT', 'QUEUED')
record(KEYS[2], KEYS[3], ARGV[6],
  {ARGV[1], version, now_ms, 'SUPPLIED', ARGV[4], 'QUEUED', '', ARGV[5], {}, cur[5]})
stage_audit(audit)
return {'OK', 'QUEUED', version, now_ms}
