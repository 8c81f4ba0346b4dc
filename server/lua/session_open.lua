-- session_open: opens a session for a user whose password was just checked and, for
-- ChangePassword, sets the user's own new password with it, and stages the action's
-- audit record in the same step (R15). The account is read before the ~40 ms scrypt
-- check, during which an administrator may disable, deregister or reset it. The check is
-- here, in the same step as the writes, so that a login racing a leave gets no token
-- that works again once the account is enabled, and a deregistered account is never
-- changed again (R12): the account must still be ACTIVE, and its password the one
-- verified unless the user's own change replaced it meanwhile (two ChangePasswords at
-- once from the same password both land, and both stay in the history): one an
-- administrator set since ('mc', a reset of a password known to others) refuses it.
-- The token is 32 random bytes: finding its key set means this step is a repeat of one
-- that landed (its reply lost), answered as the first run was, and nothing changes.
-- The new password keeps the one it replaces in the history (keep_replaced_password).
-- KEYS[1] the account's hash   KEYS[2] the set of its token keys (same hash tag)
-- KEYS[3] the new token's key
-- KEYS[4] the user id's failed logins (login_failed.lua; none: not counted). A lock that
-- began during the check refuses the session, right password or not, as every attempt
-- for the id is refused while it lasts (the answer tells no right password from a wrong
-- one). A session opened clears the count in this same step: a wrong password counted
-- right after it is not erased by a clear that came later.
-- ARGV[1] the password hash the check verified   ARGV[2] the user id
-- ARGV[3] the token's lifetime (s)   ARGV[4] the new password hash ('': none)
-- ARGV[5] when it was set (ms)   ARGV[6] how many replaced hashes the history keeps
-- then take_audit(): the action's record
-- Returns {'OK'} | {'REFUSED', status}: the account is no longer ACTIVE (its status) or
-- an administrator reset its password | {'LOCKED', ms}: the id's logins are locked for
-- ms more
local audit = take_audit()
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'OK'}
end
if KEYS[4] and redis.call('HEXISTS', KEYS[4], 'lk') == 1 then
  return {'LOCKED', redis.call('PTTL', KEYS[4])}
end
local status, current, reset = unpack(redis.call('HMGET', KEYS[1], 'st', 'pw', 'mc'))
-- An account stored without a status is active (server/accounts/store.py _account).
status = status or 'ACTIVE'
if status ~= 'ACTIVE' or not current or (current ~= ARGV[1] and reset == '1') then
  return {'REFUSED', status}
end
if ARGV[4] ~= '' then
  keep_replaced_password(KEYS[1], ARGV[4], tonumber(ARGV[6]))
  redis.call('HSET', KEYS[1], 'pw', ARGV[4], 'pwat', ARGV[5], 'mc', '0')
end
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
redis.call('SADD', KEYS[2], KEYS[3])
if KEYS[4] then
  redis.call('DEL', KEYS[4])
end
stage_audit(audit)
return {'OK'}
