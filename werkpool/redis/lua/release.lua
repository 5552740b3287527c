-- RELEASE: werkpool.redis's release script (loaded by werkpool/redis/_scripts.py).
--
-- KEYS: concurrency keys; ARGV[1]: the channel, then each key's lease member. Removes the leases
-- and tells the waiters (of every process) which limit has room again.
for i = 1, #KEYS do
  if redis.call('ZREM', KEYS[i], ARGV[i + 1]) == 1 then
    redis.call('PUBLISH', ARGV[1], KEYS[i])
  end
end
return 1
