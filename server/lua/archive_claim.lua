-- archive_claim: takes the job of archiving one ended request, so that of several
-- server processes one writes it at a time (server/archive/index.py).
-- KEYS[1] archive marker hash of the request   KEYS[2] req hash
-- ARGV[1] claimant (one id per process)   ARGV[2] claim lasts (ms)
-- Returns {'CLAIMED'} | {'DONE', day} already archived
--       | {'BUSY', claimant}   another process holds a live claim
--       | {'GONE'}             no hot record to archive
local m = redis.call('HMGET', KEYS[1], 'st', 'own', 'until', 'day')
if m[1] == 'done' then
  return {'DONE', m[4]}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'GONE'}
end
local now_ms = math.floor(now_us() / 1000)
if m[1] == 'pending' and m[2] ~= ARGV[1] and tonumber(m[3]) > now_ms then
  return {'BUSY', m[2]}
end
redis.call('HSET', KEYS[1], 'st', 'pending', 'own', ARGV[1],
  'until', fmt(now_ms + tonumber(ARGV[2])))
return {'CLAIMED'}
