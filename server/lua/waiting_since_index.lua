-- waiting_since_index: puts items waiting from before the waiting-since sets existed
-- into their class's set (Keys.waiting_since), at when they joined the queue (enq; sub
-- for a record from before enq). Run once, at start, over a ZSCAN of each lane
-- (server/store/waiting_since.py). Each batch is atomic: an item the scan listed but
-- that was claimed since is no longer in its lane and is skipped (its entry would
-- never be removed), and one enqueued since is in its set already (enqueue, _lib.lua),
-- which NX keeps.
-- KEYS[1] the lane   ARGV[1] the request hash's key prefix   ARGV[2..] request ids
-- Returns how many it added.
local since = since_key(KEYS[1])
local added = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], id) then
    local at = redis.call('HMGET', ARGV[1] .. id, 'enq', 'sub')
    local joined = at[1] or at[2]
    if joined then
      added = added + redis.call('ZADD', since, 'NX', joined, id)
    end
  end
end
return added
