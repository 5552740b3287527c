-- REASSERT: werkpool.redis's reassert script (loaded by werkpool/redis/_scripts.py).
--
-- KEYS: concurrency keys; ARGV[1]: the lease (s), then members: add them back, whatever the
-- count (they run now: the count must say so, and others wait until it is below n again).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], math.ceil(lease * 2000) + 1000)
end
return #KEYS
