-- The reply both scripts end with: batch.py puts this before apply_batch.lua and
-- read_counts.lua. Every shared count from one moment, as strings where Redis holds them
-- (a Lua number is a double: INCRBY's reply would lose digits past 2^53):
--   the counter, the five classes (1xx first; nil for none), request and response body bytes,
--   then for each window asked for (`sizes`: how many of `window_keys` each sums, in order;
--   0: not asked) the sum of its buckets, then, with `series`, that hash as field, value, ...
-- A bucket that is not an integer makes its window's sum that value, for the reader to report.
local function counts_reply(counter, responses, bytes, window_keys, sizes, series)
  local values = redis.call('HMGET', responses, '1xx', '2xx', '3xx', '4xx', '5xx')
  table.insert(values, 1, redis.call('GET', counter))
  for _, n in ipairs(redis.call('HMGET', bytes, 'request', 'response')) do
    table.insert(values, n)
  end
  local first = 1
  for _, size in ipairs(sizes) do
    if size > 0 then
      local sum = 0
      for _, n in ipairs(redis.call('MGET', unpack(window_keys, first, first + size - 1))) do
        if n and not tonumber(n) then
          sum = n
          break
        end
        sum = sum + (tonumber(n) or 0)
      end
      table.insert(values, sum)
    end
    first = first + size
  end
  if series then
    for _, item in ipairs(redis.call('HGETALL', series)) do
      table.insert(values, item)
    end
  end
  return values
end
