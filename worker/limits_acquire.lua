-- Acquire a per-host slot (lease semaphore with bounded waiters). See docs/internals-host-limits.md.
-- KEYS[1]  holders ZSET of the host: member = job_id, score = lease deadline (ms, Redis clock)
-- KEYS[2]  waiters ZSET of the host: member = job_id, score = wait deadline (ms, Redis clock)
-- KEYS[3]  evicting SET of the host: idle tokens whose owner was asked to close them, and the
--          fairness markers of waiters that waited a whole wake chunk: ``wait:<job_id>`` (asks
--          for an idle session's slot) and ``served:<job_id>`` (one was asked for it)
-- KEYS[4]  wake LIST of the host (a refused waiter passes a wake token on)
-- ARGV[1]  job_id
-- ARGV[2]  limit (concurrent holders allowed for this host)
-- ARGV[3]  lease length in ms
-- ARGV[4]  wait length in ms: > 0 lets the job join (or stay among) the waiters when no slot
--          is free for it; 0 removes it from the waiters
-- ARGV[5]  waiter capacity: at most this many jobs wait for the host at once
-- ARGV[6]  host name (for eviction requests)
-- ARGV[7]  "1" when the job joined the waiters in an earlier try (it leaves them when it takes
--          over an idle session's slot; the other outcomes read the waiters anyway); a first
--          try (ARGV[8]) also counts the job hash's phase "waiting" (a killed earlier execution);
--          "2" when it has also waited a whole wake chunk without a slot (it is *starving*: it
--          goes before the other waiters, and a process taking over its own idle session yields
--          it instead)
-- ARGV[8]  "" or, for a job's first try, its Celery retry number: the try also records the
--          execution in the job hash (worker/state.py, what JobState.start did): KEYS[5] the
--          job hash, KEYS[6] its kept result; ARGV[9] the hash's TTL (s), ARGV[10] the most
--          deliveries of one message. A job whose result is kept, or whose message was
--          delivered more often than that, takes no slot (outcome "busy").
-- ARGV[11] the prefix of the owners' eviction lists (worker.limits.EVICT_PREFIX,
--          ``wincert:shells:evict:``): the one key this script does not get in KEYS, as its
--          owner is known only from the holder it reads (a token ``idle:<owner>:<n>``); passed
--          in so the key's name is defined once, next to its reader (worker/remote/budget.py)
-- ARGV[12] the slot length (ms) of the caller's idle sessions (0: it parks none): a grant
--          that extends the holders key's expiry extends it that much further, so the job's
--          park of its slot after it (limits_release.lua) needs no PEXPIREAT of its own
-- ARGV[13..] idle-session tokens of the calling process for this host (``idle:<owner>:<n>``)
-- Idle pooled sessions hold slots as members ``idle:<owner>:<n>`` (worker/remote/budget.py).
-- A caller passing one of its own idle tokens takes that token's slot over (the session is
-- reused: outcome "granted", 4th value = the token). A caller that gets no slot while other
-- processes' idle sessions hold some asks the oldest one's owner to close it: LPUSH
-- "<host>\t<token>" onto ``<ARGV[11]><owner>`` (the owner closes it while still
-- holding its slot, then releases it, which wakes a waiter).
-- Returns {outcome, holders after the call, deadline_ms, reused token or nil, covered}, with
-- ARGV[8] followed by {attempts, deliveries, ms since the first execution, result kept (0/1), a
-- slot granted to an earlier execution (0/1)}; covered (granted only, else 0): a time (ms) the
-- holders key is known to outlive by a second (limits_release.lua's park takes it); outcome is
--   "granted"   the job now holds a slot until deadline_ms
--   "duplicate" the job already holds a slot (a redelivered copy of a running job)
--   "wait"      no slot for it now; it is a waiter until deadline_ms (block on the wake list)
--   "busy"      no slot and no room among the waiters; deadline_ms: the earliest holder's
-- Waiters go first: a job that is not waiting is granted only while more slots are free than
-- jobs wait, so a freed slot goes to a woken waiter, not to a newcomer.
--
-- Every redis.call is a command Redis counts (docs/internals-host-limits.md, "Commands per
-- job"): each ZSET is read once, whole (holders: at most the limit plus expired leases;
-- waiters: at most the capacity plus expired waits), and the decisions are made on that copy.
-- Expiry: every writer keeps each key's expiry at least a second past its latest score, so a
-- deadline no later than a live member's needs no PEXPIREAT. The LISTs (wake, eviction
-- requests) get their 60 s expiry when a push creates them (LPUSH replies 1), not on every
-- push: one that stays non-empty that long holds only tokens nobody popped.
local holders = KEYS[1]
local waiters = KEYS[2]
local evicting = KEYS[3]
local job_id = ARGV[1]
local limit = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local wait_ms = tonumber(ARGV[4])
local capacity = tonumber(ARGV[5])
local host = ARGV[6]
local was_waiting = ARGV[7] == '1' or ARGV[7] == '2'
local starving = ARGV[7] == '2'
local wait_marker, served_marker = 'wait:' .. job_id, 'served:' .. job_id
local evict_prefix = ARGV[11]
local park_ms = tonumber(ARGV[12]) or 0
local first_token = 13

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- the job's bookkeeping (first try only): read now, written once with the outcome's phase; the
-- same counts as worker/state.py's _START for jobs refused before a slot try (change both)
local book = ARGV[8] ~= nil and ARGV[8] ~= ''
local job_key, dfield, attempts, deliveries, first_ms, granted_before, finished
if book then
  job_key = KEYS[5]
  dfield = 'd:' .. ARGV[8]
  local cur = redis.call('HMGET', job_key, 'attempts', dfield, 'first_ms', 'granted', 'phase')
  attempts = (tonumber(cur[1]) or 0) + 1
  deliveries = (tonumber(cur[2]) or 0) + 1
  first_ms = tonumber(cur[3])
  granted_before = cur[4] and 1 or 0
  finished = redis.call('EXISTS', KEYS[6])
  -- an earlier execution killed while waiting may have left a live waiter entry (2b removes it)
  was_waiting = was_waiting or cur[5] == 'waiting'
end

-- the reply; with bookkeeping, one HSET of the counts and the phase (running when granted)
local function reply(outcome, count, deadline, token, covered)
  if not book then
    return {outcome, count, deadline, token or false, covered or 0}
  end
  local fields = {'attempts', attempts, dfield, deliveries}
  if outcome == 'granted' then
    fields[#fields + 1] = 'phase'
    fields[#fields + 1] = 'running'
    fields[#fields + 1] = 'granted'
    fields[#fields + 1] = 1
  else
    fields[#fields + 1] = 'phase'
    fields[#fields + 1] = 'waiting'
  end
  if not first_ms then
    fields[#fields + 1] = 'first_ms'
    fields[#fields + 1] = now
  end
  redis.call('HSET', job_key, unpack(fields))
  if not first_ms then
    redis.call('EXPIRE', job_key, ARGV[9])
  end
  local waited = first_ms and math.max(0, now - first_ms) or 0
  return {outcome, count, deadline, token or false, covered or 0, attempts, deliveries, waited, finished, granted_before}
end

if book and (finished == 1 or deliveries > tonumber(ARGV[10])) then
  return reply('busy', 0, now)
end

-- read a ZSET once: its live members (score > now) in score order, their scores, the latest
-- score, and whether any expired (those are removed: a crashed holder's lease, a killed waiter)
local function live(key)
  local raw = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local members, scores, latest, expired = {}, {}, 0, false
  for i = 1, #raw, 2 do
    local score = tonumber(raw[i + 1])
    if score <= now then
      expired = true
    else
      members[#members + 1] = raw[i]
      scores[raw[i]] = score
      if score > latest then latest = score end
    end
  end
  if expired then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  end
  return members, scores, latest
end

-- extend the key's expiry to a second past `deadline` + `slack`: a key with no live member is
-- new (no expiry yet); otherwise only a deadline past the latest live score needs it (GT: never
-- shorten). Returns a time the key now outlives by a second (`covered`)
local function keep_alive(key, deadline, members, latest, slack)
  if #members == 0 then
    redis.call('PEXPIREAT', key, deadline + slack + 1000)
  elseif deadline > latest then
    redis.call('PEXPIREAT', key, deadline + slack + 1000, 'GT')
  else
    return latest
  end
  return deadline + slack
end

-- the caller leaves the waiters' line (when `in_line`) and drops its starving markers
local function leave_line(in_line)
  if in_line then
    redis.call('ZREM', waiters, job_id)
  end
  if starving then
    redis.call('SREM', evicting, wait_marker, served_marker)
  end
end

-- 1. holders whose lease ran out (crashed or stalled workers) lose their slot
local held, held_score, held_latest = live(holders)
local count = #held

-- 2. the same job already holds a slot (another copy of it was granted): this copy leaves the
--    line and drops its starving markers (a ``wait:`` marker left would make the next owner
--    about to reuse its idle session close it for nobody)
if held_score[job_id] then
  leave_line(was_waiting)
  return reply('duplicate', count, held_score[job_id])
end

-- the evicting SET, read at most once (only on paths that need it): its members as a set
local asked_set
local function asked()
  if not asked_set then
    asked_set = {}
    for _, member in ipairs(redis.call('SMEMBERS', evicting)) do
      asked_set[member] = true
    end
  end
  return asked_set
end

-- remove `members` from the evicting SET (and from the copy): SREM in batches, as unpack() of
-- a long list fails ("too many results to unpack") and the SET's members come from Redis
local function drop(members)
  for i = 1, #members, 500 do
    redis.call('SREM', evicting, unpack(members, i, math.min(i + 499, #members)))
  end
  for _, member in ipairs(members) do
    asked_set[member] = nil
  end
end

-- ask the owner of idle token `token` to close that session (it releases the slot afterwards,
-- which wakes a waiter)
local function evict(token)
  local owner = string.match(token, '^idle:([^:]+):')
  if not owner then
    return false
  end
  asked()[token] = true
  redis.call('SADD', evicting, token)
  redis.call('PEXPIRE', evicting, 60000)
  local queue = evict_prefix .. owner
  if redis.call('LPUSH', queue, host .. '\t' .. token) == 1 then
    redis.call('PEXPIRE', queue, 60000)
  end
  return true
end

-- a starving waiter other than the caller still without a slot asked for (``wait:<id>``), or nil
local function unserved()
  for member in pairs(asked()) do
    if string.sub(member, 1, 5) == 'wait:' and member ~= wait_marker then
      return string.sub(member, 6)
    end
  end
  return nil
end

-- 2b. reuse: take over the slot of one of the caller's own idle sessions -- unless another
--     waiter has waited a whole wake chunk and no slot was asked for it yet: then the session
--     is closed for it instead (fairness across processes: the owner's reaper closes it and
--     releases the slot, which wakes that waiter), and the caller waits like the others
local yielded = false
for i = first_token, #ARGV do
  local token = ARGV[i]
  if held_score[token] and asked()[token] then
    yielded = true  -- the caller's own session is being closed for a waiter: its slot goes to the line
  elseif held_score[token] then
    local starved = not starving and unserved()
    if starved and evict(token) then
      redis.call('SREM', evicting, 'wait:' .. starved)
      redis.call('SADD', evicting, 'served:' .. starved)
      asked_set['wait:' .. starved] = nil
      asked_set['served:' .. starved] = true
      yielded = true
    else
      leave_line(was_waiting)
      local deadline = now + lease_ms
      -- add before removing: the key (with its expiry) never disappears in between
      redis.call('ZADD', holders, deadline, job_id)
      redis.call('ZREM', holders, token)
      local covered = keep_alive(holders, deadline, held, held_latest, park_ms)
      return reply('granted', count, deadline, token, covered)
    end
  end
end

-- waiters whose wait ran out (a killed waiter) leave the line
local queued, queued_score, queued_latest = live(waiters)
local waiting = queued_score[job_id] ~= nil
local others = #queued
if waiting then
  others = others - 1
end
local free = limit - count

-- starving waiters other than the caller (their markers; stale markers are dropped). Only
-- those that tried within their last chunk count (a live waiter's entry is renewed at least
-- every chunk, and outlives it by 2 s): a stalled or killed one does not hold a free slot back.
local function starving_others()
  local n = 0
  local stale = {}
  for member in pairs(asked()) do
    local id = string.match(member, '^wait:(.*)$') or string.match(member, '^served:(.*)$')
    if id and id ~= job_id then
      if queued_score[id] then
        if queued_score[id] > now + 1000 then
          n = n + 1
        end
      else
        stale[#stale + 1] = member
      end
    end
  end
  drop(stale)
  return n
end

-- 3. grant: a waiter while a slot is free, anyone else only while more slots are free than
--    jobs wait; a waiter that is not starving only while more slots are free than starving
--    others wait (it passes the wake token on to them). The key expires a second after its
--    latest deadline (every writer extends its expiry with PEXPIREAT GT, Redis 7; only a key
--    created here has none yet).
local refused = false
if free > 0 and (waiting or others < free) then
  if waiting and not starving and others >= free and starving_others() >= free then
    refused = true
    -- the wake token passed on (the LIST: at most 64 tokens, 60 s from its creation; see Expiry)
    local tokens = redis.call('LPUSH', KEYS[4], '1')
    if tokens == 1 then
      redis.call('PEXPIRE', KEYS[4], 60000)
    elseif tokens > 64 then
      redis.call('LTRIM', KEYS[4], 0, 63)
    end
  else
    leave_line(waiting)
    local deadline = now + lease_ms
    redis.call('ZADD', holders, deadline, job_id)
    local covered = keep_alive(holders, deadline, held, held_latest, park_ms)
    return reply('granted', count + 1, deadline, nil, covered)
  end
end

-- 3b. no slot: ask the owner of the oldest idle session not yet asked to close it (one
--     request per waiting job at most). Only asked sessions that still hold a slot are being
--     closed; an asked token without one (its owner was killed before closing it, or the
--     release failed) is dropped: counted, it would hold back every later request while the
--     SET's expiry is renewed
local evicted = false
if count >= limit and count > 0 then
  local set = asked()
  local closing = 0
  local gone = {}
  for member in pairs(set) do
    if string.sub(member, 1, 5) == 'idle:' then
      if held_score[member] then
        closing = closing + 1
      else
        gone[#gone + 1] = member
      end
    end
  end
  drop(gone)
  if closing < others + 1 then
    for _, member in ipairs(held) do
      if string.sub(member, 1, 5) == 'idle:' and not set[member] and evict(member) then
        evicted = true
        break
      end
    end
  end
end

-- 4. wait (join or stay in line) when allowed and there is room (a job whose process's idle
--    session is being closed for a waiter -- it yielded it just now, or another job asked --
--    joins even a full line: the line does not grow, the waiter the slot goes to leaves it;
--    re-publishing instead let that process run through the queue re-publishing every job). A starving waiter marks itself (asks for an idle
--    session's slot), unless this try asked for one already.
if wait_ms > 0 and (waiting or others < capacity or yielded) then
  if starving and not refused then
    local set = asked()
    if not set[wait_marker] and not set[served_marker] then
      redis.call('SADD', evicting, evicted and served_marker or wait_marker)
      redis.call('PEXPIRE', evicting, 60000)
    end
    starving_others()  -- drops the markers of waiters that left
  end
  local until_ms = now + wait_ms
  redis.call('ZADD', waiters, until_ms, job_id)
  keep_alive(waiters, until_ms, queued, queued_latest, 0)
  return reply('wait', count, until_ms)
end

-- 5. busy: leave the line, report the earliest holder's deadline
if waiting then
  redis.call('ZREM', waiters, job_id)
end
if starving then
  redis.call('SREM', evicting, wait_marker, served_marker)
end
local first = held[1] and held_score[held[1]] or now
return reply('busy', count, first)
