-- Acquire a per-host slot (lease semaphore). See docs/internals-host-limits.md.
-- KEYS[1]  holders ZSET of the host: member = job_id, score = lease deadline (ms, Redis clock)
-- ARGV[1]  job_id
-- ARGV[2]  limit (concurrent holders allowed for this host)
-- ARGV[3]  lease length in ms
-- Returns {outcome, holders after the call, deadline_ms}; outcome is
--   "granted"   the job now holds a slot until deadline_ms
--   "duplicate" the job already holds a slot (a redelivered copy of a running job)
--   "busy"      all slots are taken; deadline_ms is the earliest deadline among holders
local holders = KEYS[1]
local job_id = ARGV[1]
local limit = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- 1. holders whose lease has run out (crashed or stalled workers) lose their slot
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)

-- 2. the same job already holds a slot
local held = redis.call('ZSCORE', holders, job_id)
if held then
  return {'duplicate', redis.call('ZCARD', holders), tonumber(held)}
end

-- 3. no free slot
local count = redis.call('ZCARD', holders)
if count >= limit then
  local first = redis.call('ZRANGE', holders, 0, 0, 'WITHSCORES')
  return {'busy', count, tonumber(first[2])}
end

-- 4. grant; the key expires when its last lease would have
local deadline = now + lease_ms
redis.call('ZADD', holders, deadline, job_id)
local last = redis.call('ZRANGE', holders, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', holders, tonumber(last[2]) + 1000)
return {'granted', count + 1, deadline}
