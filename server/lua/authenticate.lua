-- authenticate: who holds this token, in one round trip.
-- KEYS[1] token key ("token:<sha256 of the token>")
-- ARGV[1] account key prefix (the account key shares the hash tag)
-- Returns {} for an unknown or expired token
--       | {user_id, HGETALL of the account}
local user = redis.call('GET', KEYS[1])
if not user then
  return {}
end
return {user, redis.call('HGETALL', ARGV[1] .. user)}
