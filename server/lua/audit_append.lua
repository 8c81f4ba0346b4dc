-- audit_append: appends a batch of audit records that the caller has already chained
-- (sha256 in Python, see server/store/audit.py), provided the chain head is still the
-- one the caller chained from: a compare-and-set, so concurrent writers (several server
-- processes) can never fork or interleave the chain. Only the archiver trims the stream,
-- once the records are in segment files (audit_trim.lua; R15 keeps them for good).
-- Each record is stored under the stream id "<seq>-0", so a record is found by its
-- sequence number in O(log n) and XADD itself refuses a seq that does not grow.
--
-- Fairness: a writer that just committed has a fresh head and tends to win again, so a
-- writer in another process could lose every race. One that has lost twice asks for
-- the turn: while it holds the turn (a key with a short expiry, in case it dies) every
-- other writer is told to WAIT, so its next try succeeds.
--
-- Staged records: the scripts that do audited actions stage each action's record in the
-- same step (stage_audit, _lib.lua). A batch starts with the oldest staged records the
-- writer read, and this script removes them from the staging stream as it chains them:
-- a record is staged or chained, never both and never neither. That the head did not
-- move since the writer read them also means nobody chained them meanwhile.
--
-- KEYS[1] audit stream   KEYS[2] chain head hash {seq, hash}   KEYS[3] turn (string)
-- KEYS[4] staging stream   KEYS[5] hour index (hash: hour -> first seq chained in it)
-- ARGV[1] expected head seq ('0': empty log)   ARGV[2] expected head hash
-- ARGV[3] genesis hash (the prev of seq 1)   ARGV[4] writer id
-- ARGV[5] '1': take the turn if the head moved   ARGV[6] turn expiry (ms)
-- ARGV[7] id of the last staged record the batch starts with ('': none)
-- ARGV[8..] four per record: seq, prev, hash, packed body
-- Returns {'OK'} | {'DONE'} (this batch is already in the log: a retried call whose
--         reply was lost) | {'MOVED', head seq, head hash} (chain from there, retry)
--       | {'WAIT', head seq, head hash} (another writer has the turn: retry shortly)
--       | {'BAD', message} (the batch does not link: a caller bug, nothing written)
local FIRST = 8
local n = #ARGV - FIRST + 1
if n <= 0 or n % 4 ~= 0 then
  return {'BAD', 'expected 4 values per record, got ' .. n}
end
local head = redis.call('HMGET', KEYS[2], 'seq', 'hash')
local head_seq = head[1] or '0'
local head_hash = head[2] or ARGV[3]
local turn = redis.call('GET', KEYS[3])
if head_seq ~= ARGV[1] or head_hash ~= ARGV[2] then
  -- The record at the batch's last seq carries our hash only if this very batch was
  -- written: the hash covers seq, prev and body, and prev the records before it. (Not
  -- the first record: two writers that read the same staged records chain the same
  -- first records, and only what they add after those differs.)
  local last_id = ARGV[#ARGV - 3] .. '-0'
  local found = redis.call('XRANGE', KEYS[1], last_id, last_id)
  if found[1] then
    local fields = found[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'hash' and fields[i + 1] == ARGV[#ARGV - 1] then
        return {'DONE'}
      end
    end
  end
  if not turn and ARGV[5] == '1' then
    redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[6])
  end
  return {'MOVED', head_seq, head_hash}
end
if turn and turn ~= ARGV[4] then
  return {'WAIT', head_seq, head_hash}
end
-- Checked before writing anything: the script must not leave half a batch behind.
local seq = tonumber(ARGV[1])
local prev = ARGV[2]
for i = FIRST, #ARGV, 4 do
  seq = seq + 1
  if tonumber(ARGV[i]) ~= seq or ARGV[i + 1] ~= prev then
    return {'BAD', 'record ' .. ARGV[i] .. ' does not link to seq ' .. fmt(seq - 1)}
  end
  prev = ARGV[i + 2]
end
-- Only the first XADD can fail (a stream whose top id was pushed past this seq by
-- hand): it then fails before anything is written, and later ids only grow.
for i = FIRST, #ARGV, 4 do
  redis.call('XADD', KEYS[1], ARGV[i] .. '-0',
    'seq', ARGV[i], 'prev', ARGV[i + 1], 'hash', ARGV[i + 2], 'body', ARGV[i + 3])
end
redis.call('HSET', KEYS[2], 'seq', ARGV[#ARGV - 3], 'hash', ARGV[#ARGV - 1])
-- The first seq chained in each hour, by Redis's one clock (hours since the epoch): a
-- report over a period starts reading there instead of at seq 1 (AuditLog.first_seq_since).
-- A record's own time is its action's, which comes before its chaining.
redis.call('HSETNX', KEYS[5], fmt(math.floor(now_us() / 3600000000)), ARGV[FIRST])
if ARGV[7] ~= '' then
  -- MINID keeps ids from the one after the last staged record chained.
  local ms, part = string.match(ARGV[7], '^(%d+)-(%d+)$')
  redis.call('XTRIM', KEYS[4], 'MINID', ms .. '-' .. fmt(tonumber(part) + 1))
end
if turn then
  redis.call('DEL', KEYS[3])
end
return {'OK'}
