-- Yield idle sessions to a host's waiting jobs (worker/remote/pool.py's yield thread, through
-- worker/remote/budget.py). See docs/internals-host-limits.md, "Yield".
-- KEYS[1]  holders ZSET of the host
-- KEYS[2]  waiters ZSET of the host
-- KEYS[3]  evicting SET of the host
-- ARGV[1..] idle-session tokens of the calling process for this host (``idle:<owner>:<n>``)
-- While jobs wait for the host (its waiters ZSET exists), each token that still holds a live
-- slot is marked as being closed (SADD to the evicting SET, as an eviction request does):
-- acquire (limits_acquire.lua, 2b) no longer hands its slot to a job of the owner, so the owner
-- can close the session under the slot and then release it (limits_release.lua drops the mark).
-- A token whose slot a job of the owner took over already is not a holder: not marked, and that
-- job uses the session. Returns the marked tokens (none without waiters).
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local marked = {}
for i = 1, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) > now and string.sub(ARGV[i], 1, 5) == 'idle:' then
    marked[#marked + 1] = ARGV[i]
  end
end
if #marked > 0 then
  redis.call('SADD', KEYS[3], unpack(marked))
  redis.call('PEXPIRE', KEYS[3], 60000)
end
return marked
