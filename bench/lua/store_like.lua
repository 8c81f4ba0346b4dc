-- The least a durable submit does, without authq's checks and bookkeeping: the
-- request stored, queued in a lane and announced on the event stream.
-- KEYS: lane, events.  ARGV: request id, request bytes, score.
redis.call('HSET', 'be:req:' .. ARGV[1], 'st', 'QUEUED', 'v', 1, 'd', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 50000, '*', 'm', ARGV[1])
return 1
