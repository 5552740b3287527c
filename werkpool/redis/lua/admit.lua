-- ADMIT: werkpool.redis's admit script (loaded by werkpool/redis/_scripts.py).
--
-- One call admits a batch of attempts, in order (the store sends the admissions that wait
-- while one call is in flight together: one round trip and one script call for all of them).
-- KEYS: each attempt's keys (one per shared limit of the attempt), the attempts one after the
-- other, then the store's restart key (see RECOVER), then its epoch key (RedisStore.call adds
-- it, and the epoch the store knows as the last ARGV).
-- ARGV: the number of attempts, then per attempt: its number of keys n, its chain, the holder,
-- the lease (s), the horizon (s), then five per key: kind (r, w, c), a, b, cost, keyed (1 or
-- 0). For a rate a = seconds per unit, b = burst; for a window a = per, b = count; for a
-- concurrency limit a = n.
-- A chain (any name but '-', which is none) is one pool's attempts that must start in the order
-- sent (RedisStore(pipeline=1)): once one of them is not granted, the later ones of its chain in
-- this call take nothing, as if each had waited for the answer before it.
-- A start whose rates and windows have credit within the horizon is granted for that time (its
-- slot is taken now, and dated there): the client waits the rest on its own clock, so it starts
-- on time instead of asking again one round trip (and a timer's lateness) after the credit.
-- Reply: one per attempt, in order. {1, start, wait} granted from start (Redis time), wait
-- from now, both in whole microseconds (integers); {0, wait, full, pool, hint} refused: wait (s) until the rates and windows have
-- credit; full = 1 if a concurrency limit is full, hint (s) until its first lease ends; pool = 1
-- if a limit of the pool (not only per-key ones) refused; {-1, message} a key of the wrong type
-- (that attempt fails, the others go on); {2} not asked (an earlier attempt of its chain was not
-- granted). Other numbers go back as strings: Redis would truncate a Lua number to an integer. An
-- epoch other than the store's is an error reply for the whole batch, before anything is taken
-- (see EPOCH_CHANGED in _scripts.py).
local call, tonumber, format = redis.call, tonumber, string.format
if call('GET', KEYS[#KEYS]) ~= ARGV[#ARGV] then
  return redis.error_reply('WERKPOOL_EPOCH the server lost its keys (flushed or restarted)')
end
-- One clock reading for the batch: the script runs atomically, so its attempts are one instant.
local t = call('TIME')
-- Rates count whole microseconds (exact integers in a double up to 2^53), the rest seconds.
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = now_us / 1000000
local function cost_of(member)
  return tonumber(string.match(member, '|([^|]*)$'))
end
-- A key of another type: the message names it (looked up only then, not per admission).
local function wrong(key, want)
  return {-1, 'the key ' .. key .. ' holds a ' ..
    call('TYPE', key)['ok'] .. ', not the ' .. want .. ' of a werkpool shared limit'}
end

-- One attempt: its n keys are KEYS[k0 + 1 .. k0 + n], its arguments ARGV[a0 + 1 ..] (the
-- holder, the lease, the horizon, then five per key).
local function admit(k0, a0, n)
  local holder = ARGV[a0 + 1]
  local lease, ahead = tonumber(ARGV[a0 + 2]), tonumber(ARGV[a0 + 3])
  local wait, full, pool, hint = 0, 0, 0, lease
  local late_pool, checked = false, false
  -- Each rate's tat, read once (the second pass takes the slot from it).
  local tats = {}
  for i = 1, n do
    local key = KEYS[k0 + i]
    local j = a0 + 3 + (i - 1) * 5
    local kind = ARGV[j + 1]
    local a, b, cost = tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3]), tonumber(ARGV[j + 4])
    local w = 0
    if kind == 'r' then
      local got = redis.pcall('GET', key)
      if type(got) == 'table' and got.err then return wrong(key, 'string') end
      local tat = tonumber(got or '0') or 0
      tats[key] = tat
      w = (tat - (b - cost) * a * 1000000 - now_us) / 1000000
    elseif kind == 'w' then
      local got = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', now - a)
      if type(got) == 'table' and got.err then return wrong(key, 'zset') end
      local starts = call('ZRANGE', key, 0, -1, 'WITHSCORES')
      local total = 0
      for k = 1, #starts, 2 do total = total + cost_of(starts[k]) end
      if total + cost > b + 1e-9 then
        w = math.huge
        local left = total
        for k = 1, #starts, 2 do
          left = left - cost_of(starts[k])
          if left + cost <= b + 1e-9 then
            w = tonumber(starts[k + 1]) + a - now
            break
          end
        end
      end
    else
      if cost > 0 and not checked then
        -- After a restart, leases may still be put back: no new lease until then (rates and
        -- windows hold no lease, so they go on; read only for an admission that takes a lease).
        checked = true
        local recovering = tonumber(call('GET', KEYS[#KEYS - 1]) or '0') or 0
        if now < recovering then
          return {0, '0', 1, 1, format('%.6f', recovering - now)}
        end
      end
      local got = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', now)
      if type(got) == 'table' and got.err then return wrong(key, 'zset') end
      local leases = call('ZRANGE', key, 0, -1, 'WITHSCORES')
      local total = 0
      for k = 1, #leases, 2 do
        if string.sub(leases[k], 1, #holder + 1) ~= holder .. '|' then
          total = total + cost_of(leases[k])
        end
      end
      if total + cost > a + 1e-9 then
        full = 1
        if #leases >= 2 then
          local h = tonumber(leases[2]) - now
          if h < hint then hint = h end
        end
        if ARGV[j + 5] == '0' then pool = 1 end
      end
    end
    if w > 1e-9 then
      if w > wait then wait = w end
      if ARGV[j + 5] == '0' then late_pool = true end
    end
  end
  if full == 1 or wait > ahead then
    if late_pool then pool = 1 end
    return {0, format('%.6f', wait), full, pool, format('%.6f', hint)}
  end
  -- Whole microseconds: a rate's schedule never runs ahead of its slots by a rounding.
  local start_us = now_us + math.ceil(wait * 1000000)
  local start = start_us / 1000000
  for i = 1, n do
    local key = KEYS[k0 + i]
    local j = a0 + 3 + (i - 1) * 5
    local kind = ARGV[j + 1]
    local a, cost = tonumber(ARGV[j + 2]), tonumber(ARGV[j + 4])
    if cost > 0 then
      if kind == 'r' then
        -- tat: when the bucket is empty again, in whole microseconds, each start's share
        -- rounded up (a rate may fall short of its count by under a microsecond per start,
        -- never over).
        local tat = tats[key]
        if tat < start_us then tat = start_us end
        tat = tat + math.ceil(cost * a * 1000000 - 1e-6)
        tats[key] = tat  -- (a key named twice takes both slots)
        call('SET', key, format('%d', tat),
          'PX', math.ceil((tat - now_us) / 1000) + 1000)
      elseif kind == 'w' then
        call('ZADD', key, start, holder .. '|' .. ARGV[j + 4])
        call('PEXPIRE', key, math.ceil((a + wait) * 1000) + 1000)
      else
        call('ZADD', key, start + lease, holder .. '|' .. ARGV[j + 4])
        call('PEXPIRE', key, math.ceil((lease + wait) * 2000) + 1000)
      end
    end
  end
  -- Whole microseconds as integers: formatting two numbers as strings cost more than the
  -- rest of a lone admission's arithmetic.
  return {1, start_us, start_us - now_us}
end

-- A lone attempt (a pool's admission with nothing else waiting): no chain can stop it.
if ARGV[1] == '1' then
  return {admit(0, 3, tonumber(ARGV[2]))}
end
local replies = {}
-- The chains that met a refusal (or an error) in this call: their later attempts are not asked.
local stopped = nil
local k0, a0 = 0, 1
for m = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a0 + 1])
  local chain = ARGV[a0 + 2]
  if chain ~= '-' and stopped and stopped[chain] then
    replies[m] = {2}
  else
    replies[m] = admit(k0, a0 + 2, n)
    if chain ~= '-' and replies[m][1] ~= 1 then
      stopped = stopped or {}
      stopped[chain] = true
    end
  end
  k0 = k0 + n
  a0 = a0 + 5 + n * 5
end
return replies
