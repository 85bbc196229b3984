-- Release a per-host slot and wake one waiter. See docs/internals-host-limits.md.
-- KEYS[1]  holders ZSET of the host
-- KEYS[2]  waiters ZSET of the host
-- KEYS[3]  wake LIST of the host (one token per freed slot while jobs wait)
-- ARGV[1]  job_id
-- Returns 1 if the job held a slot (now released), else 0.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('LPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, 63)
  redis.call('PEXPIRE', KEYS[3], 60000)
end
return removed
