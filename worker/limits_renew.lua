-- Extend a held lease. See docs/internals-host-limits.md.
-- KEYS[1]  holders ZSET of the host
-- ARGV[1]  job_id
-- ARGV[2]  lease length in ms
-- Returns the new deadline (ms), or 0 when the job no longer holds a slot (lease lost).
local holders = KEYS[1]
local job_id = ARGV[1]
local lease_ms = tonumber(ARGV[2])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- XX: only update a member that is still there; never re-create a lost lease
local deadline = now + lease_ms
local changed = redis.call('ZADD', holders, 'XX', 'CH', deadline, job_id)
if changed == 0 and not redis.call('ZSCORE', holders, job_id) then
  return 0
end
-- the key lives a second past its latest deadline: extend, never shorten (PEXPIREAT GT)
redis.call('PEXPIREAT', holders, deadline + 1000, 'GT')
return deadline
