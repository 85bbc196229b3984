-- Release a per-host slot and wake one waiter, or hand a job's slot to its idle session.
-- See docs/internals-host-limits.md.
-- KEYS[1]  holders ZSET of the host
-- KEYS[2]  waiters ZSET of the host
-- KEYS[3]  wake LIST of the host (one token per freed slot while jobs wait)
-- KEYS[4]  evicting SET of the host
-- ARGV[1]  job_id, or an idle-session token (``idle:<owner>:<n>``) being closed
-- ARGV[2]  optional: park the slot under this idle token instead of freeing it
-- ARGV[3]  with ARGV[2]: the idle token's lease (ms)
-- ARGV[4]  with ARGV[2], optional: ``covered`` (ms, Redis clock) from this process's previous
--          park of the slot (worker/remote/budget.py): the holders key is known to expire at
--          least a second past it, so a token deadline no later needs no PEXPIREAT
-- Returns 1 if the member held a slot (now released), {2, covered} if parked, else 0.
-- A park that extends the key's expiry extends it by a second idle lease beyond the token's
-- deadline (covered = deadline + ARGV[3]): the same process's next park of this slot within
-- that lease (its next job on the host, which took the token's slot over) needs none. Why the
-- bound holds then: the key existed the whole time (the token, then the job that took it over
-- in one script, ZADD before ZREM, were members throughout, and the ZREM below found the job),
-- and every writer only extends its expiry (GT) while it exists.
if string.sub(ARGV[1], 1, 5) == 'idle:' then
  -- only idle-session tokens are ever asked to close (a job id is never in the evicting set)
  redis.call('SREM', KEYS[4], ARGV[1])
end
if ARGV[2] and ARGV[2] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local deadline = now + tonumber(ARGV[3])
  -- add before removing: the key (with its expiry) never disappears in between, so
  -- PEXPIREAT GT extends its expiry to a second past the latest deadline, never shortens it
  local added = redis.call('ZADD', KEYS[1], 'NX', deadline, ARGV[2])
  if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
    if added == 0 then
      redis.call('ZADD', KEYS[1], deadline, ARGV[2])  -- the token was there: its new deadline
    end
    local covered = tonumber(ARGV[4]) or 0
    if deadline > covered then
      covered = deadline + tonumber(ARGV[3])
      redis.call('PEXPIREAT', KEYS[1], covered + 1000, 'GT')
    end
    return {2, covered}
  end
  if added == 1 then
    redis.call('ZREM', KEYS[1], ARGV[2])  -- the job held no slot: nothing to park
  end
  return 0
end
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  -- the wake LIST: at most 64 tokens; it expires 60 s after a push created it (LPUSH replies
  -- 1), not after every push: one that stays non-empty that long holds only tokens nobody popped
  local tokens = redis.call('LPUSH', KEYS[3], '1')
  if tokens == 1 then
    redis.call('PEXPIRE', KEYS[3], 60000)
  elseif tokens > 64 then
    redis.call('LTRIM', KEYS[3], 0, 63)
  end
end
return removed
