-- Applies one batch of counts (batch.py's ScriptCall builds KEYS and ARGV, in this order; batch.py
-- puts counts_reply.lua before this):
--   KEYS[1] the counter   KEYS[2] the writer's key   KEYS[3] the hash of responses by class
--   KEYS[4] the hash of requests by series for counter_by's list   KEYS[5] the set of such hashes
--   KEYS[6] the hash of body bytes   KEYS[7..6+W] window buckets to add to (windows.py)
--   KEYS[7+W..] window buckets to read (and, for a reset, to delete)
--   ARGV[1] the batch's sequence number   ARGV[2] requests   ARGV[3] the writer key's lifetime (s)
--   ARGV[4..8] responses by class, 1xx first   ARGV[9] '1' for a reset (every count to 0)
--   ARGV[10] the most series kept (counter_max_series)   ARGV[11] the overflow series' field
--   ARGV[12] '1' to return the series too   ARGV[13] request bytes   ARGV[14] response bytes
--   ARGV[15] W, the buckets to add to   ARGV[16..18] how many buckets each window reads
--   ARGV[19..18+2W] each bucket's requests and lifetime (ms) if the addition makes it
--   ARGV[19+2W..] series: field, requests, field, ...
-- Only if the sequence number is new for this writer: resending a batch whose reply was lost
-- cannot count it twice. Whatever can fail is tried before the first write: a script failing
-- halfway keeps what it wrote, which the batch's resend would then write again. The writer's
-- key expires: dead processes leave nothing behind; so does every bucket, once no window
-- covers it. Returns counts_reply's list, which saves readers a round trip.
local counter, writer, responses, by, lists, bytes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local seq, requests, writer_ttl, reset = ARGV[1], ARGV[2], ARGV[3], ARGV[9] == '1'
local max_series, other = tonumber(ARGV[10]), ARGV[11]
local request_bytes, response_bytes = ARGV[13], ARGV[14]
local classes = {'1xx', '2xx', '3xx', '4xx', '5xx'}
local amounts = {ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]}
local writes = tonumber(ARGV[15])
local sizes = {tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18])}
local buckets, bucket_adds, lifetimes = {}, {}, {}
for i = 1, writes do
  buckets[i] = KEYS[6 + i]
  bucket_adds[i] = ARGV[17 + 2 * i]
  lifetimes[i] = ARGV[18 + 2 * i]
end
local window_keys = {unpack(KEYS, 7 + writes)}
local fields, added = {}, {}
for i = 19 + 2 * writes, #ARGV, 2 do
  table.insert(fields, ARGV[i])
  table.insert(added, ARGV[i + 1])
end
local function integers(values, what)
  for i = 1, #values do
    if values[i] and not string.match(values[i], '^%-?%d+$') then
      return redis.error_reply('ERR ' .. what .. ' value is not an integer')
    end
  end
end
if tonumber(seq) > tonumber(redis.call('GET', writer) or '0') then
  if reset then
    redis.call('SET', counter, '0')
    redis.call('DEL', responses, bytes)
    -- Every series list ever written beside the counter: they share its hash tag, and so
    -- its Cluster slot.
    for _, hash in ipairs(redis.call('SMEMBERS', lists)) do
      redis.call('DEL', hash)
    end
    redis.call('DEL', lists)
    -- The buckets any window covers now (older ones are gone already).
    if #window_keys > 0 then
      redis.call('DEL', unpack(window_keys))
    end
  end
  local held = redis.call('HMGET', responses, unpack(classes))
  for i = 1, 5 do
    if amounts[i] ~= '0' and held[i] and not string.match(held[i], '^%-?%d+$') then
      return redis.error_reply('ERR hash value is not an integer (' .. classes[i] .. ')')
    end
  end
  local refused = integers(redis.call('HMGET', bytes, 'request', 'response'), 'bytes')
  if not refused and writes > 0 then
    refused = integers(redis.call('MGET', unpack(buckets)), 'window bucket')
  end
  local series_held = {}
  if not refused and #fields > 0 then
    series_held = redis.call('HMGET', by, other, unpack(fields))
    refused = integers(series_held, 'series')
  end
  if refused then
    return refused
  end
  if requests ~= '0' then
    redis.call('INCRBY', counter, requests)
  end
  for i = 1, 5 do
    if amounts[i] ~= '0' then
      redis.call('HINCRBY', responses, classes[i], amounts[i])
    end
  end
  if request_bytes ~= '0' then
    redis.call('HINCRBY', bytes, 'request', request_bytes)
  end
  if response_bytes ~= '0' then
    redis.call('HINCRBY', bytes, 'response', response_bytes)
  end
  for i = 1, writes do
    -- A bucket made by this addition gets its lifetime; one already there has its own.
    if redis.call('INCRBY', buckets[i], bucket_adds[i]) == tonumber(bucket_adds[i]) then
      redis.call('PEXPIRE', buckets[i], lifetimes[i])
    end
  end
  if #fields > 0 then
    -- The cap is on the series kept: the overflow series is not one of them.
    local kept = redis.call('HLEN', by) - (series_held[1] and 1 or 0)
    if kept == 0 then  -- the list's hash is new: one for a reset to find
      redis.call('SADD', lists, by)
    end
    for i = 1, #fields do
      if series_held[i + 1] then
        redis.call('HINCRBY', by, fields[i], added[i])
      elseif kept < max_series then
        redis.call('HINCRBY', by, fields[i], added[i])
        kept = kept + 1
      else
        redis.call('HINCRBY', by, other, added[i])
      end
    end
  end
  redis.call('SET', writer, seq, 'EX', writer_ttl)
else
  -- Already applied: only the writer's key is refreshed. That is a write too, so that a WAIT
  -- after this resend covers the batch's first application (WAIT counts the replicas that
  -- have a connection's latest write).
  redis.call('EXPIRE', writer, writer_ttl)
end
return counts_reply(counter, responses, bytes, window_keys, sizes, ARGV[12] == '1' and by or nil)
