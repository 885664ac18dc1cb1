-- Applies one batch of counts (batch.py's ScriptCall builds KEYS and ARGV, in this order):
--   KEYS[1] the counter   KEYS[2] the writer's key   KEYS[3] the hash of responses by class
--   ARGV[1] the batch's sequence number   ARGV[2] requests   ARGV[3] the writer key's lifetime (s)
--   ARGV[4..8] responses by class, 1xx first   ARGV[9] '1' for a reset (counter 0, hash emptied)
-- Only if the sequence number is new for this writer: resending a batch whose reply was lost
-- cannot count it twice. Whatever can fail is tried before the first write: a script failing
-- halfway keeps what it wrote, which the batch's resend would then write again. The writer's
-- key expires: dead processes leave nothing behind. Returns the counter's value and the five
-- classes' (nil for none), which saves readers a round trip: as strings, since a Lua number is
-- a double and INCRBY's reply would lose digits past 2^53.
local counter, writer, responses = KEYS[1], KEYS[2], KEYS[3]
local seq, requests, writer_ttl, reset = ARGV[1], ARGV[2], ARGV[3], ARGV[9] == '1'
local classes = {'1xx', '2xx', '3xx', '4xx', '5xx'}
local amounts = {ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]}
if tonumber(seq) > tonumber(redis.call('GET', writer) or '0') then
  if reset then
    redis.call('SET', counter, '0')
    redis.call('DEL', responses)
  end
  local held = redis.call('HMGET', responses, unpack(classes))
  for i = 1, 5 do
    if amounts[i] ~= '0' and held[i] and not string.match(held[i], '^%-?%d+$') then
      return redis.error_reply('ERR hash value is not an integer (' .. classes[i] .. ')')
    end
  end
  if requests ~= '0' then
    redis.call('INCRBY', counter, requests)
  end
  for i = 1, 5 do
    if amounts[i] ~= '0' then
      redis.call('HINCRBY', responses, classes[i], amounts[i])
    end
  end
  redis.call('SET', writer, seq, 'EX', writer_ttl)
else
  -- Already applied: only the writer's key is refreshed. That is a write too, so that a WAIT
  -- after this resend covers the batch's first application (WAIT counts the replicas that
  -- have a connection's latest write).
  redis.call('EXPIRE', writer, writer_ttl)
end
local values = redis.call('HMGET', responses, unpack(classes))
table.insert(values, 1, redis.call('GET', counter))
return values
