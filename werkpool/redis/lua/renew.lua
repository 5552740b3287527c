-- RENEW: werkpool.redis's renew script (loaded by werkpool/redis/_scripts.py).
--
-- KEYS: concurrency keys, then the epoch key; ARGV[1]: the lease (s), then each key's lease
-- member, then the epoch (both added by RedisStore.call, as for ADMIT). Extends the leases that
-- exist; returns the (1-based) indexes of those that do not (expired, or lost with a restarted
-- server), which the store re-adds if it still holds them.
if redis.call('GET', KEYS[#KEYS]) ~= ARGV[#ARGV] then
  return redis.error_reply('WERKPOOL_EPOCH the server lost its keys (flushed or restarted)')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
local missing = {}
for i = 1, #KEYS - 1 do
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', now + lease, ARGV[i + 1]) == 0 then
    if not redis.call('ZSCORE', KEYS[i], ARGV[i + 1]) then
      missing[#missing + 1] = i
    end
  end
  redis.call('PEXPIRE', KEYS[i], math.ceil(lease * 2000) + 1000)
end
return missing
