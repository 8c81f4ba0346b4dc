-- create_once: creates an account or a branch whole, or not at all, and stages the
-- creation's audit record in the same step (R15): a kill cannot leave an id taken by
-- a half-written hash, nor a creation without its record.
-- KEYS[1] the record's hash   KEYS[2] the set that lists every such record
-- ARGV[1] the id (its member of KEYS[2])   ARGV[2..] field, value, field, value, ...
-- then take_audit(): the creation's record
-- Returns {'OK'} | {'EXISTS'}
local audit = take_audit()
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'EXISTS'}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
stage_audit(audit)
return {'OK'}
