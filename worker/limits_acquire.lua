-- Acquire a per-host slot (lease semaphore with bounded waiters). See docs/internals-host-limits.md.
-- KEYS[1]  holders ZSET of the host: member = job_id, score = lease deadline (ms, Redis clock)
-- KEYS[2]  waiters ZSET of the host: member = job_id, score = wait deadline (ms, Redis clock)
-- ARGV[1]  job_id
-- ARGV[2]  limit (concurrent holders allowed for this host)
-- ARGV[3]  lease length in ms
-- ARGV[4]  wait length in ms: > 0 lets the job join (or stay among) the waiters when no slot
--          is free for it; 0 removes it from the waiters
-- ARGV[5]  waiter capacity: at most this many jobs wait for the host at once
-- ARGV[6]  host name (for eviction requests)
-- ARGV[7..] idle-session tokens of the calling process for this host (``idle:<owner>:<n>``)
-- KEYS[3]  evicting SET of the host: idle tokens whose owner was asked to close them
-- Idle pooled sessions hold slots as members ``idle:<owner>:<n>`` (worker/remote/budget.py).
-- A caller passing one of its own idle tokens takes that token's slot over (the session is
-- reused: outcome "granted", 4th value = the token). A caller that gets no slot while other
-- processes' idle sessions hold some asks the oldest one's owner to close it: LPUSH
-- "<host>\t<token>" onto ``wincert:shells:evict:<owner>`` (the owner closes it while still
-- holding its slot, then releases it, which wakes a waiter).
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
local host = ARGV[6]
local evicting = KEYS[3]

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

-- 2b. reuse: take over the slot of one of the caller's own idle sessions
for i = 7, #ARGV do
  local token = ARGV[i]
  if redis.call('ZSCORE', holders, token) and redis.call('SISMEMBER', evicting, token) == 0 then
    if waiting then
      redis.call('ZREM', waiters, job_id)
    end
    local deadline = now + lease_ms
    -- add before removing: the key (with its expiry) never disappears in between, so
    -- PEXPIREAT GT extends its expiry to a second past the latest deadline, never shortens it
    redis.call('ZADD', holders, deadline, job_id)
    redis.call('ZREM', holders, token)
    redis.call('PEXPIREAT', holders, deadline + 1000, 'GT')
    return {'granted', count, deadline, token}
  end
end

-- 3. grant: a waiter while a slot is free, anyone else only while more slots are free than
--    jobs wait. The key expires a second after its latest deadline (every writer extends its
--    expiry with PEXPIREAT GT, Redis 7; only a key created here has none yet).
if free > 0 and (waiting or others < free) then
  if waiting then
    redis.call('ZREM', waiters, job_id)
  end
  local deadline = now + lease_ms
  redis.call('ZADD', holders, deadline, job_id)
  if count == 0 then
    redis.call('PEXPIREAT', holders, deadline + 1000)  -- a new key: no expiry yet
  else
    redis.call('PEXPIREAT', holders, deadline + 1000, 'GT')  -- extend, never shorten
  end
  return {'granted', count + 1, deadline}
end

-- 3b. no slot: ask the owner of the oldest idle session not yet asked to close it (one
--     request per waiting job at most)
if count >= limit and count > 0 then
  local asked = redis.call('SCARD', evicting)
  if asked < others + 1 then
    local members = redis.call('ZRANGE', holders, 0, -1)
    for _, member in ipairs(members) do
      if string.sub(member, 1, 5) == 'idle:' and redis.call('SISMEMBER', evicting, member) == 0 then
        local owner = string.match(member, '^idle:([^:]+):')
        if owner then
          redis.call('SADD', evicting, member)
          redis.call('PEXPIRE', evicting, 60000)
          local queue = 'wincert:shells:evict:' .. owner
          redis.call('LPUSH', queue, host .. '\t' .. member)
          redis.call('PEXPIRE', queue, 60000)
          break
        end
      end
    end
  end
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
