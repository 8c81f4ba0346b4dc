-- Helpers shared by every script: server/store/scripts.py prepends this file to each
-- script before loading it, so each operation stays one atomic script.
--
-- A request lives in the hash KEYS "req:<id>" with the fields
--   st  state             v   version (grows by one per change)
--   d   msgpack submission    fp  fingerprint of the submission (idempotency)
--   sc  queue score (us)  ln  lane key it waits in   br  branch   sub  submitted (ms)
--   am  amount in minor units of the local currency (routing by ceiling)
--   h   holder / decider  tok fencing token   lu  lease deadline (ms)
--   rv  "1" once review started   prv  rv before the claim (a put-back restores it)
--   sx  msgpack list of supplied images
--   enq when it joined the queue (ms; submit, on-site confirmation, supply), which
--       the backlog's oldest wait counts from
--   tl  the submitting teller and  rvw  the on-site reviewer: neither may ever
--       authorize it (R11)
-- Numbers beyond 2^31 are formatted with %.0f: Lua's tostring would print 1.7e+15.

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function fmt(n)
  return string.format('%.0f', n)
end

-- Appends one entry to the event stream that every server process follows
-- (watchers, waiting authorizers, the lease reaper) and returns it packed.
-- entry = {request_id, version, at_ms, event, actor, state, reason_code, note, kinds,
--          branch}
local function emit(events_key, maxlen, entry)
  local packed = cmsgpack.pack(entry)
  redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'm', packed)
  return packed
end

-- Emits the entry and appends it to the request's history list. (The SUBMITTED
-- entry is only emitted: it is rebuilt from the record, which saves a list per
-- waiting item.)
local function record(hist_key, events_key, maxlen, entry)
  redis.call('RPUSH', hist_key, emit(events_key, maxlen, entry))
end

-- Lanes (server/domain/routing.py): an item waits in the sorted set of its (priority
-- class, business type, amount band), and the set "<prefix>:lanes" names every lane
-- that holds anything, so that a claim looks only at those. Its name is derived from
-- the lane's (same prefix, same hash tag): server/store/keys.py Keys.lanes.
local function lane_index(lane)
  return string.match(lane, '^(.*):lane:') .. ':lanes'
end

-- Beside its lane, a waiting item is in its class's set ordered by when it joined the
-- queue (enq), where the overview and the backlog read the oldest wait: a lane's head
-- is the first to be offered, not the longest waiting (server/store/keys.py
-- Keys.waiting_since).
local function since_key(lane)
  local prefix, class = string.match(lane, '^(.*):lane:(i%du%d):')
  return prefix .. ':since:' .. class
end

-- enq: when it joined the queue (ms); nil for an item that waits already and only
-- changes its place (a confirmed move).
local function enqueue(lane, score, id, enq)
  redis.call('ZADD', lane, score, id)
  redis.call('SADD', lane_index(lane), lane)
  if enq then
    redis.call('ZADD', since_key(lane), enq, id)
  end
end

local function dequeue(lane, id)
  redis.call('ZREM', lane, id)
  redis.call('ZREM', since_key(lane), id)
  if redis.call('ZCARD', lane) == 0 then
    redis.call('SREM', lane_index(lane), lane)
  end
end

-- Takes a request out of where it waits for the center, as it ends without a decision:
-- its lane and its branch's waiting count when QUEUED, the branch's set of requests
-- awaiting on-site review when PENDING_ONSITE_REVIEW. Any other state waits nowhere.
local function unwait(state, lane, id, branch, waiting_key, onsite_key)
  if state == 'QUEUED' then
    dequeue(lane, id)
    redis.call('HINCRBY', waiting_key, branch, -1)
  elseif state == 'PENDING_ONSITE_REVIEW' then
    redis.call('ZREM', onsite_key, id)
  end
end

-- Moves one request between per-state counters (for the supervisor overview).
local function count_move(counts_key, from_state, to_state)
  if from_state then redis.call('HINCRBY', counts_key, from_state, -1) end
  if to_state then redis.call('HINCRBY', counts_key, to_state, 1) end
end

-- The action's own audit record (R15), staged in the same atomic step as the action:
-- an action done is an action audited even if the server dies the moment after. The
-- audit writer chains staged records into the trail (server/store/audit.py), and the
-- script that chains them removes them in the same step. A script that stages takes
-- the staging stream's key and the packed record off the END of KEYS and ARGV before
-- it reads its own, so that its own numbering stays as documented. An empty record:
-- the caller audits the action itself.
-- take_audits(n): a script that may stage more than one record (a move that finds an
-- earlier one lapsed) takes n of them, in the order the caller appended them: the
-- action's own record first, then templates the script completes (stage_audit's patch).
local function take_audits(n)
  local key = table.remove(KEYS)
  local taken = {}
  for i = n, 1, -1 do
    taken[i] = {key = key, body = table.remove(ARGV)}
  end
  return taken
end

local function take_audit()
  return take_audits(1)[1]
end

-- Stages the record. ``patch`` fills in what only the script knows (which item a claim
-- took, whose lease lapsed), and the time it happened; the result is no longer in the
-- canonical form, so it goes under the field 'p' and the writer re-encodes it.
local function stage_audit(audit, patch)
  if audit.body == '' then
    return
  end
  if not patch then
    redis.call('XADD', audit.key, '*', 'b', audit.body)
    return
  end
  local entry = cmsgpack.unpack(audit.body)
  for name, value in pairs(patch) do
    if name == 'details' then
      for key, detail in pairs(value) do
        entry.details[key] = detail
      end
    else
      entry[name] = value
    end
  end
  redis.call('XADD', audit.key, '*', 'p', cmsgpack.pack(entry))
end

-- Stages the record of a two-person move that lapsed unconfirmed (R6) from its template
-- (REPRIORITIZE_LAPSE by the system): whichever script sees the lapse first stages it,
-- so that each lapse is audited exactly once (server/store/moves.py).
local function stage_move_lapse(lapse, request_id, rq, rs, cr, ex, now_ms)
  local window_s = (tonumber(ex) - tonumber(cr)) / 1000
  stage_audit(lapse, {
    target = request_id,
    outcome = string.format('LAPSED: not confirmed within %g s (R6)', window_s),
    at_ms = now_ms,
    details = {requester = rq, reason = rs, requested_at_ms = tonumber(cr),
               expires_at_ms = tonumber(ex)},
  })
end

-- Why a caller's hold on a claimed item does not stand, as the script's answer; nil when
-- it does. holder, token, lease_until: the record's (h, tok, lu); who, presented: the
-- caller's. who nil: any holder (the token alone decides); now_ms nil: the lease's end
-- is not checked. The reasons are those the clients act on (server/errors.py).
local function lease_refusal(holder, token, lease_until, who, presented, now_ms)
  if who and holder ~= who then
    return {'LEASE', 'LEASE_HELD_BY_OTHER'}
  end
  if token ~= presented then
    return {'LEASE', 'STALE_FENCING_TOKEN', presented, token}
  end
  if now_ms and tonumber(lease_until) < now_ms then
    return {'LEASE', 'LEASE_EXPIRED'}
  end
  return nil
end

-- Before an account's password hash is set to new_hash: puts the one it replaces at the
-- head of the history (pwh: space-separated hashes, newest first, at most depth of them;
-- no scrypt hash holds a space). Read and written in the step that sets the password, so
-- two changes at once cannot drop one of them from the history (R11). The hash is salted:
-- finding it already set means this step is a repeat, and the history is left as it is.
local function keep_replaced_password(account_key, new_hash, depth)
  local current = redis.call('HGET', account_key, 'pw')
  if not current or current == new_hash then
    return
  end
  local kept = {current}
  local before = redis.call('HGET', account_key, 'pwh') or ''
  for hash in string.gmatch(before, '%S+') do
    if #kept >= depth then
      break
    end
    kept[#kept + 1] = hash
  end
  redis.call('HSET', account_key, 'pwh', table.concat(kept, ' '))
end
