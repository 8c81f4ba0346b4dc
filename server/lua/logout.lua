-- logout: ends a session token and stages the logout's audit record in the same step
-- (R15); the user is known only from the token, so the script names it in the record.
-- KEYS[1] token key ("token:<sha256 of the token>")
-- ARGV[1] the account-tokens key prefix (the key shares the hash tag)
-- then take_audit(): the LOGOUT record's template (actor and target filled in here)
-- Returns {'OK', user_id} | {'UNKNOWN'} for a token that had ended or never existed
local audit = take_audit()
local user = redis.call('GETDEL', KEYS[1])
if not user then
  return {'UNKNOWN'}
end
redis.call('SREM', ARGV[1] .. user, KEYS[1])
stage_audit(audit, {actor = user, target = user})
return {'OK', user}
