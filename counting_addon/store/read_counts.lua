-- Reads every shared count at once (batch.py's READ_COUNTS, after counts_reply.lua): one
-- script, so the series, the windows and the counter come from one moment and sum up exactly.
--   KEYS[1] the counter   KEYS[2] the hash of responses by class   KEYS[3] the bytes hash
--   KEYS[4] the series hash (read if ARGV[1] is '1')   KEYS[5..] the window buckets
--   ARGV[1] '1' to read the series   ARGV[2..4] how many buckets each window sums (0: not read)
-- Returns counts_reply's list.
local sizes = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local series = ARGV[1] == '1' and KEYS[4] or nil
return counts_reply(KEYS[1], KEYS[2], KEYS[3], {unpack(KEYS, 5)}, sizes, series)
