-- Acquire a per-host slot (lease semaphore with bounded waiters). See docs/internals-host-limits.md.
-- KEYS[1]  holders ZSET of the host: member = job_id, score = lease deadline (ms, Redis clock)
-- KEYS[2]  waiters ZSET of the host: member = job_id, score = wait deadline (ms, Redis clock)
-- ARGV[1]  job_id
-- ARGV[2]  limit (concurrent holders allowed for this host)
-- ARGV[3]  lease length in ms
-- ARGV[4]  wait length in ms: > 0 lets the job join (or stay among) the waiters when no slot
--          is free for it; 0 removes it from the waiters
-- ARGV[5]  waiter capacity: at most this many jobs wait for the host at once
-- Returns {outcome, holders after the call, deadline_ms}; outcome is
--   "granted"   the job now holds a slot until deadline_ms
--   "duplicate" the job already holds a slot (a redelivered copy of a running job)
--   "wait"      no slot for it now; it is a waiter until deadline_ms (block on the wake list)
--   "busy"      no slot and no room among the waiters; deadline_ms: the earliest holder's
-- Waiters go first: a job that is not waiting is granted only while more slots are free than
-- jobs wait, so a freed slot goes to a woken waiter, not to a newcomer.
local holders = KEYS[1]
local waiters = KEYS[2]
local job_id = ARGV[1]
local limit = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local wait_ms = tonumber(ARGV[4])
local capacity = tonumber(ARGV[5])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- 1. holders whose lease ran out (crashed or stalled workers) lose their slot; waiters whose
--    wait ran out (a killed waiter) leave the line (the waiters key exists only while jobs wait)
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
local others = redis.call('ZCARD', waiters)
local waiting = false
if others > 0 then
  others = others - redis.call('ZREMRANGEBYSCORE', waiters, '-inf', now)
  waiting = redis.call('ZSCORE', waiters, job_id)
  if waiting then
    others = others - 1
  end
end

-- 2. the same job already holds a slot
local held = redis.call('ZSCORE', holders, job_id)
if held then
  return {'duplicate', redis.call('ZCARD', holders), tonumber(held)}
end

local count = redis.call('ZCARD', holders)
local free = limit - count

-- 3. grant: a waiter while a slot is free, anyone else only while more slots are free than
--    jobs wait. The key expires a second after its latest deadline.
if free > 0 and (waiting or others < free) then
  if waiting then
    redis.call('ZREM', waiters, job_id)
  end
  local deadline = now + lease_ms
  redis.call('ZADD', holders, deadline, job_id)
  local last = redis.call('ZRANGE', holders, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', holders, tonumber(last[2]) + 1000)
  return {'granted', count + 1, deadline}
end

-- 4. wait (join or stay in line) when allowed and there is room
if wait_ms > 0 and (waiting or others < capacity) then
  local until_ms = now + wait_ms
  redis.call('ZADD', waiters, until_ms, job_id)
  redis.call('PEXPIREAT', waiters, until_ms + 1000)
  return {'wait', count, until_ms}
end

-- 5. busy: leave the line, report the earliest holder's deadline
if waiting then
  redis.call('ZREM', waiters, job_id)
end
local first = redis.call('ZRANGE', holders, 0, 0, 'WITHSCORES')
return {'busy', count, tonumber(first[2] or now)}
