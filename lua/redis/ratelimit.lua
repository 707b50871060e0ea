-- ratelimit.lua - sluice's Redis-side token bucket (docs/rate-limiting.md).
--
-- Embedded into the sluice binary at build time (Makefile.am turns this file
-- into modules/rl_script.c); sluice runs it with EVALSHA, falling back to
-- EVAL when Redis answers NOSCRIPT. Redis's clock (TIME) is the one clock of
-- every shared bucket. The arithmetic is the one of modules/rl_bucket.c: a
-- level in ticks, one token = `per_us` ticks, `rate` ticks per microsecond,
-- at most burst x per_us ticks (kept below 2^53 by the config check, so Lua's
-- doubles stay exact).
--
-- take: KEYS[1] = bucket key
--   ARGV = "take", rate, per_us, burst, want
--   Grants up to `want` whole tokens (a lease) and returns
--   { granted, tokens_left, wait_us (until one token), full_us (until full) }
-- beat: KEYS[1] = instances key
--   ARGV = "beat", instance_id, window_s
--   Records the calling instance and returns how many instances were seen
--   within the window (used to split limits when Redis goes away).

if redis.replicate_commands then
  -- TIME before a write needs effect replication on Redis < 5 (the default since)
  redis.replicate_commands()
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local mode = ARGV[1]

if mode == 'beat' then
  local window = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], tonumber(t[1]), ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) - window)
  redis.call('EXPIRE', KEYS[1], window * 2)
  return redis.call('ZCARD', KEYS[1])
end

if mode ~= 'take' then
  return redis.error_reply('sluice ratelimit.lua: unknown mode ' .. tostring(mode))
end

local rate = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local cap = burst * per
local backward_tolerance = 1000000

local v = redis.call('HMGET', KEYS[1], 'l', 't')
local level = tonumber(v[1])
local last = tonumber(v[2])
if level == nil or last == nil then
  level = cap
  last = now
end
if level > cap then
  level = cap
end
if now >= last then
  local missing = cap - level
  -- compare before multiplying, like rl_bucket.c
  if now - last >= math.ceil(missing / rate) then
    level = cap
  else
    level = level + (now - last) * rate
  end
  last = now
elseif last - now > backward_tolerance then
  last = now
end

local have = math.floor(level / per)
local granted = want
if have < granted then
  granted = have
end
level = level - granted * per

local full_us = 0
if level < cap then
  full_us = math.ceil((cap - level) / rate)
end
local wait_us = 0
if level < per then
  wait_us = math.ceil((per - level) / rate)
end

redis.call('HSET', KEYS[1], 'l', level, 't', last)
-- a bucket left alone until full is the same as no bucket: let Redis forget it
redis.call('PEXPIRE', KEYS[1], math.floor(full_us / 1000) + 1000)
return { granted, math.floor(level / per), wait_us, full_us }
