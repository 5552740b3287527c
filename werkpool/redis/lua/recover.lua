-- RECOVER: werkpool.redis's recover script (loaded by werkpool/redis/_scripts.py).
--
-- KEYS: the restart key, the epoch key, then concurrency keys. ARGV: the epoch the client knew
-- ('' at its first contact), the grace (s), a hold (s), the lease (s), the client's id, then each
-- key's lease member. Run by a client at its first contact with the server, after its scripts
-- were gone (NOSCRIPT), after an epoch error, and after an outage during which its local share
-- admitted attempts. It adopts the epoch (making one, dated now, if there is none) and adds its
-- running leases (back), whatever the count: they run now, so the count must say so, and others
-- wait until it is below n again. If the epoch is not the one the client knew, the server lost
-- its keys (flushed, or restarted empty) at about the epoch's date: every new lease is held until
-- a grace after it, the time every other live client needs to notice too (its renewal comes within
-- a third of a lease) and add its own back, so that none is granted twice. The hold is also kept
-- for at least ARGV[3] (a server that started moments ago, see RedisStore._check_restart).
-- Returns the epoch and the hold left (s).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local known, grace = ARGV[1], tonumber(ARGV[2])
local hold, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local epoch = redis.call('GET', KEYS[2])
local born = now
if epoch then
  born = tonumber(string.match(epoch, '@([^@]*)$') or '') or now
else
  epoch = ARGV[5] .. '@' .. string.format('%.6f', now)
  redis.call('SET', KEYS[2], epoch)
end
local hold_until = now + hold
if known ~= '' and epoch ~= known and born + grace > hold_until then
  hold_until = born + grace
end
if hold_until > now then
  local held = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
  if hold_until > held then
    redis.call('SET', KEYS[1], string.format('%.6f', hold_until), 'PX',
      math.ceil((hold_until - now) * 1000) + 1)
  end
else
  hold_until = now
end
for i = 3, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[i + 3])
  redis.call('PEXPIRE', KEYS[i], math.ceil(lease * 2000) + 1000)
end
return {epoch, string.format('%.6f', hold_until - now)}
