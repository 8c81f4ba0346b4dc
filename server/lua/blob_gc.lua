-- blob_gc: forgets one hot image nobody has touched for the grace period, so that no
-- new submission can reference it (server/archive/blob_gc.py deletes the bytes next).
-- Every upload (HSET) and every submission or supply resolving the image (HMGET)
-- resets the key's idle time, so a submit racing the collector either touched it
-- within the grace period (kept) or finds it gone and asks for the upload again.
-- KEYS[1] blob hash   ARGV[1] grace period (s)
-- Returns {'GONE'} forgotten now, or no record | {'FRESH', idle_s} kept
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'GONE'}
end
local idle = redis.call('OBJECT', 'IDLETIME', KEYS[1])
if idle < tonumber(ARGV[1]) then
  return {'FRESH', idle}
end
redis.call('DEL', KEYS[1])
return {'GONE'}
