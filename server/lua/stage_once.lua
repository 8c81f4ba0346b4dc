-- stage_once: stages one audit record (R15) however often the command carrying it is
-- sent. redis-py sends a command again on a new connection when the old one died
-- before its reply came, and cannot know whether Redis ran it; a plain XADD sent
-- twice would put the record in the trail twice. The caller draws a fresh once key
-- per record, so a second send finds it and stages nothing.
-- KEYS[1] the staging stream   KEYS[2] this record's once key
-- ARGV[1] the packed record    ARGV[2] how long the once key is kept (ms): longer
--         than any resend could come
-- Returns 1 if it staged the record, 0 if an earlier send had.
if not redis.call('SET', KEYS[2], '', 'NX', 'PX', ARGV[2]) then
  return 0
end
redis.call('XADD', KEYS[1], '*', 'b', ARGV[1])
return 1
