-- Reads every shared count at once (batch.py's READ_COUNTS): one script, so the series and the
-- counter come from one moment and sum up exactly.
--   KEYS[1] the counter   KEYS[2] the hash of responses by class   KEYS[3] the series hash, if any
-- Returns the counter, the five classes (1xx first; nil for none), then the series hash as
-- field, value, ... (as apply_batch.lua's reply).
local values = redis.call('HMGET', KEYS[2], '1xx', '2xx', '3xx', '4xx', '5xx')
table.insert(values, 1, redis.call('GET', KEYS[1]))
if KEYS[3] then
  for _, item in ipairs(redis.call('HGETALL', KEYS[3])) do
    table.insert(values, item)
  end
end
return values
