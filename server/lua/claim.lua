-- claim: hand the best waiting item this authorizer may decide to it, under a lease
-- with a fresh fencing token. Only the lanes that hold anything are looked at (the set
-- KEYS[7]), and of those only the ones the authorizer qualifies for (issue 3 §4, see
-- server/domain/routing.py): one ZRANGE per lane, whatever the queue's depth.
-- KEYS[1] leases zset   KEYS[2] event stream   KEYS[3] fencing counter
-- KEYS[4] waiting-per-branch hash   KEYS[5] per-state counts hash
-- KEYS[6] the set of authorizers who are away   KEYS[7] the set of non-empty lanes
-- KEYS[8] this call's nonce key (Keys.claim_nonce: a fresh random nonce per call)
-- ARGV[1] authorizer id   ARGV[2] lease (ms)   ARGV[3] event stream max length
-- ARGV[4] request key prefix   ARGV[5] history key prefix
-- ARGV[6] business types it may decide, comma-separated, or '*'
-- ARGV[7] the last amount band wholly within its ceiling
-- ARGV[8] its ceiling in local minor units (0: none); items of the next band above
--         ARGV[7] are taken only when their amount is within it
-- ARGV[9] how long the nonce key outlives the claim (ms): longer than the pipe's
--         retries (server/store/queue_store.py CLAIM_REPEAT_TTL_MS)
-- ARGV[10] account key prefix (Keys.account_prefix)
-- The claimed item's own keys are derived from its id (prefix .. id): every key
-- carries the same hash tag, so the script stays within one Cluster slot.
-- An item the authorizer may not take (it submitted or reviewed it on site, R11, or
-- its amount is above the ceiling in the band the ceiling cuts through) is passed
-- over; only then are a few more of that lane looked at, so the usual cost stays
-- one ZRANGE and one HMGET per lane.
-- Exact score ties go to the more important, then the more urgent class.
-- Returns {'OK', id, token, lease_deadline_ms, version, HGETALL of req, history list,
--         1 if any lane still holds an item else 0}
--       | {'EMPTY', 1 if any lane holds an item (one this authorizer may not take)
--          else 0} | {'AWAY'} | {'INACTIVE'} (the account is disabled or deregistered)
-- Audited (R15): the staging stream and the action's packed record come after
-- the keys and arguments above (take_audit, _lib.lua).
-- Repeat-safe (server/store/scripts.py REPEAT_SAFE): the pipe sends a call again when
-- the connection was lost after it left and before its reply came, so it may have run.
-- A call that claims sets its nonce key to "<id> <token>" for ARGV[9] ms; a call that
-- finds its nonce key set is such a repeat, and changes nothing and stages nothing:
--   the item still CLAIMED by ARGV[1] under that token, its lease not over: answers
--     {'OK', ...} as the first run did (with the item's current deadline, version,
--     record and history), and the caller holds the claim the first run made;
--   else (decided, released, lapsed, taken by another meanwhile): answers
--     {'EMPTY', more-flag}, as a claim that found nothing: whatever became of the
--     item was its own transition, audited as such. The first run's CLAIM record
--     stays staged, as the claim was made.
-- A run that answered EMPTY or AWAY changed nothing and set no key: its repeat runs
-- as a first call. The cost of all this: one GET per call, one SET per claim.
local audit = take_audit()
local first_run = redis.call('GET', KEYS[8])
if first_run then
  local id, token = string.match(first_run, '^(.*) (%d+)$')
  local req = ARGV[4] .. id
  local held = redis.call('HMGET', req, 'st', 'h', 'tok', 'lu', 'v')
  local more = redis.call('SCARD', KEYS[7]) > 0 and 1 or 0
  if held[1] == 'CLAIMED' and held[2] == ARGV[1] and held[3] == token
      and tonumber(held[4]) >= math.floor(now_us() / 1000) then
    return {'OK', id, tonumber(token), tonumber(held[4]), tonumber(held[5]),
      redis.call('HGETALL', req), redis.call('LRANGE', ARGV[5] .. id, 0, -1), more}
  end
  return {'EMPTY', more}
end
if redis.call('SISMEMBER', KEYS[6], ARGV[1]) == 1 then
  return {'AWAY'}
end
-- An account disabled or deregistered (R12) after its call began takes nothing, though
-- the call still waits (its guard ends it: server/api/session_guard.py). No account
-- hash at all: a store used without accounts (tools, tests of the queue alone).
local status = redis.call('HGET', ARGV[10] .. ARGV[1], 'st')
if status and status ~= 'ACTIVE' then
  return {'INACTIVE'}
end
local SKIP_LIMIT = 16
local all_types = ARGV[6] == '*'
local types = ',' .. ARGV[6] .. ','
local full_bands = tonumber(ARGV[7])
local ceiling = tonumber(ARGV[8])

local function may_take(id, check_amount)
  local fields = redis.call('HMGET', ARGV[4] .. id, 'tl', 'rvw', 'am')
  if fields[1] == ARGV[1] or fields[2] == ARGV[1] then
    return false
  end
  return not check_amount or tonumber(fields[3] or '0') <= ceiling
end

local best, best_score, best_rank, best_lane
for _, lane in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  local imp, urg, btype, band_text = string.match(lane, ':lane:i(%d)u(%d):(.+):b(%d+)$')
  local band = tonumber(band_text or '-1')
  local partial = ceiling > 0 and band == full_bands + 1
  if imp and (all_types or string.find(types, ',' .. btype .. ',', 1, true))
      and (band <= full_bands or partial) then
    local head = redis.call('ZRANGE', lane, 0, 0, 'WITHSCORES')
    if head[1] and not may_take(head[1], partial) then
      head = {}
      local next_ones = redis.call('ZRANGE', lane, 1, SKIP_LIMIT, 'WITHSCORES')
      for j = 1, #next_ones, 2 do
        if may_take(next_ones[j], partial) then
          head = {next_ones[j], next_ones[j + 1]}
          break
        end
      end
    end
    if head[1] then
      local score = tonumber(head[2])
      local rank = tonumber(imp) * 10 + tonumber(urg)
      if best_score == nil or score < best_score
          or (score == best_score and rank > best_rank) then
        best, best_score, best_rank, best_lane = head[1], score, rank, lane
      end
    end
  end
end
if not best then
  return {'EMPTY', redis.call('SCARD', KEYS[7]) > 0 and 1 or 0}
end
local req = ARGV[4] .. best
local hist = ARGV[5] .. best
dequeue(best_lane, best)
local now_ms = math.floor(now_us() / 1000)
local token = redis.call('INCR', KEYS[3])
local deadline = now_ms + tonumber(ARGV[2])
local version = redis.call('HINCRBY', req, 'v', 1)
-- Review starts with the claim (R4); prv keeps the flag as it was, for a put-back of an
-- offer nobody got (requeue.lua 'put_back', image_fault.lua) to restore.
redis.call('HSET', req, 'st', 'CLAIMED', 'h', ARGV[1], 'tok', token, 'lu', fmt(deadline),
  'rv', '1', 'prv', redis.call('HGET', req, 'rv') or '0')
redis.call('ZADD', KEYS[1], fmt(deadline), best)
local branch = redis.call('HGET', req, 'br')
redis.call('HINCRBY', KEYS[4], branch, -1)
count_move(KEYS[5], 'QUEUED', 'CLAIMED')
record(hist, KEYS[2], ARGV[3],
  {best, version, now_ms, 'CLAIMED', ARGV[1], 'CLAIMED', '', '', {}, branch})
stage_audit(audit, {target = best, at_ms = now_ms, details = {token = token}})
redis.call('SET', KEYS[8], best .. ' ' .. fmt(token), 'PX', ARGV[9])
return {'OK', best, token, deadline, version, redis.call('HGETALL', req),
  redis.call('LRANGE', hist, 0, -1), redis.call('SCARD', KEYS[7]) > 0 and 1 or 0}
