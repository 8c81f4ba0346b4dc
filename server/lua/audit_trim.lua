-- audit_trim: takes a segment's records out of the audit stream once the archiver has
-- them in a segment file on disk (server/store/audit_segments.py), and moves the
-- archived mark {seq, hash} to the segment's last record, in one step: a reader that
-- sees the mark finds every record up to it in the files, every later one in the
-- stream. Segments go in order, and only the records the file was written from go.
--
-- KEYS[1] audit stream   KEYS[2] archived mark (hash {seq, hash})
-- ARGV[1] the segment's first seq   ARGV[2] its last seq   ARGV[3] its last record's hash
-- Returns {'OK'} | {'DONE'} (trimmed already: another archiver, or a retried call)
--       | {'BAD', message} (nothing changed)
local mark = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
local first = tonumber(ARGV[1])
local last = tonumber(ARGV[2])
if mark >= last then
  return {'DONE'}
end
if mark ~= first - 1 then
  return {'BAD', 'the trail is archived through seq ' .. fmt(mark) .. ', not ' .. fmt(first - 1)}
end
local found = redis.call('XRANGE', KEYS[1], ARGV[2] .. '-0', ARGV[2] .. '-0')
local stored = nil
if found[1] then
  local fields = found[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'hash' then
      stored = fields[i + 1]
    end
  end
end
if stored ~= ARGV[3] then
  return {'BAD', 'seq ' .. ARGV[2] .. ' in the stream is not the record the segment holds'}
end
redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'hash', ARGV[3])
redis.call('XTRIM', KEYS[1], 'MINID', fmt(last + 1) .. '-0')
return {'OK'}
