-- password_set: sets an account's password to the user's own new one, keeping the one it
-- replaces in the history (keep_replaced_password), as session_open.lua does in the step
-- that opens the user's session: the server runs that one, which checks the account
-- first (R12); this one stays for tests/test_password_history.py, which runs it again to
-- check that a repeat sets the same values again.
-- KEYS[1] the account's hash
-- ARGV[1] the new hash   ARGV[2] when it was set (ms)   ARGV[3] how many replaced hashes
-- the history keeps
keep_replaced_password(KEYS[1], ARGV[1], tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'pw', ARGV[1], 'pwat', ARGV[2], 'mc', '0')
return 'OK'
