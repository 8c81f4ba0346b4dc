-- login_failed: counts a wrong password for a user id (Login or ChangePassword, known id
-- or not: the answer must not tell them apart) and locks the id's logins once there were
-- too many in a row (R11: credentials are personal; a brute force is stopped). The count
-- lives as long as login_lock_s after the last wrong password, so the keys of unknown ids
-- do not pile up; the lock lasts login_lock_s from the failure that started it, and its
-- record is staged in that step, once per lock (R15). A successful login clears the count
-- (session_open.lua), as does an administrator's password reset or enable
-- (account_change.lua).
-- A failure that lands while the lock is in force (its scrypt check began before the lock
-- did) neither counts nor extends the lock: the lock is for a fixed time from when it
-- began, so that the user knows when to come back, and checks that began before it are
-- bounded by max_logins_in_flight anyway.
-- KEYS[1] the id's failures hash {n: wrong passwords in a row, lk: when the lock began}
-- ARGV[1] how many wrong passwords lock (login_failures_before_lock)
-- ARGV[2] how long the lock lasts, and the count without one (s)
-- then take_audit(): the lock's record
-- Returns {'OK', ms}: this failure began the lock (for ms; its record staged) |
-- {'COUNTED', n}: n wrong passwords in a row, no lock | {'LOCKED', ms}: locked already
-- (for ms more)
local audit = take_audit()
if redis.call('HEXISTS', KEYS[1], 'lk') == 1 then
  return {'LOCKED', redis.call('PTTL', KEYS[1])}
end
local failures = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
if failures < tonumber(ARGV[1]) then
  return {'COUNTED', failures}
end
redis.call('HSET', KEYS[1], 'lk', fmt(math.floor(now_us() / 1000)))
stage_audit(audit, {details = {failures = failures, lock_s = tonumber(ARGV[2])}})
return {'OK', tonumber(ARGV[2]) * 1000}
