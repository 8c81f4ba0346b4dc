-- account_change: changes an account's fields and stages the change's audit record in
-- the same step (R15). A deregistered account is kept as it was for the history and
-- never changes again (R12); the check is here, in the same step as the change, so
-- that no change made while another administrator deregisters the account revives it.
-- Leave and departure revoke every session token of the account in the same step:
-- a login between a read of the tokens and their deletion cannot keep one alive.
-- A change that sets the password ('pw') keeps the one it replaces in the history, in
-- the same step (keep_replaced_password).
-- Every server process caches accounts for a moment: the change is published on ARGV[3]
-- in the same step, so that each forgets the old account as soon as it lands.
-- An administrator's password reset or enable clears the id's login lock and its count of
-- wrong passwords (login_failed.lua) in the same step, so that a locked-out user can be
-- helped at once.
-- KEYS[1] the account's hash   KEYS[2] the set of its token keys (same hash tag)
-- KEYS[3] the user id's failed logins
-- ARGV[1] '1': revoke every token   ARGV[2] how many replaced password hashes the history
-- keeps when the change sets 'pw' ('0': it does not)   ARGV[3] the changes channel
-- ARGV[4] the user id   ARGV[5] '1': clear the login lock   ARGV[6..] field, value, ...
-- then take_audit(): the change's record
-- Returns {'OK'} | {'NOT_FOUND'} | {'DEREGISTERED'}
local audit = take_audit()
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'NOT_FOUND'}
end
if redis.call('HGET', KEYS[1], 'st') == 'DEREGISTERED' then
  return {'DEREGISTERED'}
end
local depth = tonumber(ARGV[2])
if depth > 0 then
  for i = 6, #ARGV, 2 do
    if ARGV[i] == 'pw' then
      keep_replaced_password(KEYS[1], ARGV[i + 1], depth)
    end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
if ARGV[1] == '1' then
  for _, token in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    redis.call('DEL', token)
  end
  redis.call('DEL', KEYS[2])
end
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[3])
end
stage_audit(audit)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {'OK'}
