-- fallback_report: stores one local fallback a teller reported (R8), once, and makes
-- sure the center never decides the same transaction as well. A retried upload changes
-- nothing; the on-site outcome may arrive in a later upload and is then added, once.
--
-- A submit whose answer the workstation never saw (a deadline, a dropped connection)
-- may have reached the center: the request of the same id is then withdrawn here, in
-- the same step, ending SENT_BACK (event LOCAL_FALLBACK) wherever it stood, even in
-- an authorizer's hands: the holder's decision is refused by the state, as after a
-- hand-back. One the center had already decided stays as it is, and the report says
-- so (central state APPROVED or REJECTED: decided twice, for people to reconcile).
-- submit.lua refuses an id with a fallback on record, so no request arrives later.
--
-- KEYS[1] the record hash   KEYS[2] the branch's index   KEYS[3] the index of all
-- KEYS[4] the request hash of the same id   KEYS[5] its archive marker
-- KEYS[6] the request's history list   KEYS[7] event stream   KEYS[8] per-state counts
-- KEYS[9] waiting-per-branch hash   KEYS[10] the branch's set awaiting on-site review
-- KEYS[11] leases zset
-- ARGV[1] request id   ARGV[2] digest of the event (all but the on-site outcome)
-- ARGV[3] occurred at (ms)   ARGV[4] on-site outcome ("" = not yet)
-- ARGV[5] on-site authorizer   ARGV[6] on-site note   ARGV[7] on-site at (ms)
-- ARGV[8] branch   ARGV[9] reporting teller   ARGV[10] note for the withdrawal
-- ARGV[11] event stream max length
-- ARGV[12..] the event's fields as name, value pairs
-- Returns {status, also_submitted (0 or 1), detail, central state ("" = none),
-- withdrawn now (0 or 1)}: status STORED, DUPLICATE, OUTCOME_ADDED or CONFLICT (detail
-- says what differs).
-- Audited (R15): the staging stream and a template of the report's record come after
-- the keys and arguments above (take_audit, _lib.lua). Each action this step takes is
-- staged from it, with what the step found: LOCAL_FALLBACK for a new record,
-- LOCAL_FALLBACK_OUTCOME for an on-site outcome added, LOCAL_FALLBACK_WITHDRAWAL for a
-- withdrawal on a later upload (a new record's withdrawal is part of its own).
local audit = take_audit()
local branch = ARGV[8]

-- The center's request of the same id: live in Redis, or archived (its marker keeps
-- the final state and the branch).
local central, central_branch = nil, nil
local req = redis.call('HMGET', KEYS[4], 'st', 'br', 'ln')
if req[1] then
  central, central_branch = req[1], req[2]
else
  local marker = redis.call('HMGET', KEYS[5], 'fs', 'br')
  if marker[1] then
    central, central_branch = marker[1], marker[2]
  end
end
if central and central_branch ~= branch then
  return {'CONFLICT', 0, 'request_id ' .. ARGV[1] .. ' belongs to a request of another ' ..
    'branch at the center: report the fallback under the id its workstation gave it', '', 0}
end
local also = 0
if central then
  also = 1
end

local held = redis.call('EXISTS', KEYS[1]) == 1
if held and redis.call('HGET', KEYS[1], 'digest') ~= ARGV[2] then
  return {'CONFLICT', also, 'a fallback with this request id was reported with other content',
    central or '', 0}
end

-- Withdraws a request the center has not decided: the branch authorized it on site.
local withdrawn = 0
local function withdraw()
  local now_ms = math.floor(now_us() / 1000)
  local version = redis.call('HINCRBY', KEYS[4], 'v', 1)
  redis.call('HSET', KEYS[4], 'st', 'SENT_BACK')
  unwait(central, req[3], ARGV[1], branch, KEYS[9], KEYS[10])
  if central == 'CLAIMED' then
    redis.call('HDEL', KEYS[4], 'lu')
    redis.call('ZREM', KEYS[11], ARGV[1])
  end
  count_move(KEYS[8], central, 'SENT_BACK')
  record(KEYS[6], KEYS[7], ARGV[11], {ARGV[1], version, now_ms, 'LOCAL_FALLBACK', ARGV[9],
    'SENT_BACK', '', ARGV[10], {}, branch})
  central = 'SENT_BACK'
  withdrawn = 1
end

if central == 'QUEUED' or central == 'PENDING_ONSITE_REVIEW' or central == 'CLAIMED'
    or central == 'NEEDS_SUPPLEMENT' then
  withdraw()
end

local function audited(action)
  stage_audit(audit, {action = action, details = {also_submitted = also,
    central_state = central or '', withdrew = withdrawn}})
end

local function withdrawal_audited()
  if withdrawn == 1 then
    audited('LOCAL_FALLBACK_WITHDRAWAL')
  end
end

local function set_outcome()
  redis.call('HSET', KEYS[1], 'onsite_outcome', ARGV[4], 'onsite_authorizer', ARGV[5],
    'onsite_note', ARGV[6], 'onsite_at', ARGV[7])
end

if not held then
  local now_ms = math.floor(now_us() / 1000)
  local fields = {'digest', ARGV[2], 'occurred_at', ARGV[3], 'received_at', fmt(now_ms),
    'also_submitted', tostring(also), 'central_state', central or ''}
  for i = 12, #ARGV do
    fields[#fields + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  if ARGV[4] ~= '' then
    set_outcome()
  end
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  audited('LOCAL_FALLBACK')
  return {'STORED', also, '', central or '', withdrawn}
end

if central then
  -- Recorded before the center held (or withdrew) the request of this id.
  redis.call('HSET', KEYS[1], 'also_submitted', '1', 'central_state', central)
end
local onsite = redis.call('HMGET', KEYS[1], 'onsite_outcome', 'onsite_authorizer')
local held_outcome = onsite[1] or ''
if ARGV[4] == '' or (ARGV[4] == held_outcome and ARGV[5] == onsite[2]) then
  withdrawal_audited()
  return {'DUPLICATE', also, '', central or '', withdrawn}
end
if held_outcome == '' then
  set_outcome()
  audited('LOCAL_FALLBACK_OUTCOME')
  withdrawal_audited()
  return {'OUTCOME_ADDED', also, '', central or '', withdrawn}
end
withdrawal_audited()
return {'CONFLICT', also, 'its on-site outcome was reported as ' .. held_outcome ..
  ' by ' .. (onsite[2] or '') .. ' already', central or '', withdrawn}
