-- Host affinity: push a job's raw message onto the direct queue of a live worker node whose
-- process holds an idle session to the job's host (worker/affinity.py), atomically with the
-- liveness check (a node declared dead never receives a job afterwards).
-- KEYS[1]  holders ZSET of the host (worker/limits.py): idle sessions are ``idle:<owner>:<n>``
-- KEYS[2]  evicting SET of the host: idle tokens whose owner was asked to close them
-- KEYS[3]  live nodes ZSET of the home queue: member = direct queue, score = heartbeat
--          deadline (ms, Redis clock)
-- ARGV[1]  the caller's own direct queue
-- ARGV[2]  push only onto a direct queue holding fewer than this many messages
-- ARGV[3]  owner key prefix: GET <prefix><owner> = that process's node's direct queue
-- ARGV[4]  the raw message (as popped from the home queue)
-- ARGV[5]  a node's heartbeat deadline is at most this far ahead (ms): one further ahead is
--          forged (Redis is untrusted input) and the node is not a target
-- ARGV[6]  look at this many of the host's newest holders at most
-- Only a direct queue (a list named ``*.dq2``, not the caller's own) is ever a target: a
-- forged registration naming the home queue (a forwarding loop), another queue or a key of
-- another type leaves the job here.
-- Returns the direct queue the message was pushed onto, or false: no other node holds a live
-- idle session to the host, the caller's own node holds one (it runs the job more cheaply),
-- or every holding node is dead or has a long queue. Newest idle session first.
local holders = KEYS[1]
local evicting = KEYS[2]
local nodes = KEYS[3]
local mine = ARGV[1]
local bound = tonumber(ARGV[2])
local prefix = ARGV[3]
local ahead = tonumber(ARGV[5])
local most = tonumber(ARGV[6])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local members = redis.call('ZREVRANGEBYSCORE', holders, '+inf', now, 'LIMIT', 0, most)
local queues = {}
local seen = {}
for i = 1, #members do
  local member = members[i]
  local owner = string.match(member, '^idle:([^:]+):')
  if owner and not seen[owner] and redis.call('SISMEMBER', evicting, member) == 0 then
    seen[owner] = true
    local queue = redis.call('GET', prefix .. owner)
    if queue == mine then
      return false
    end
    if queue and string.sub(queue, -4) == '.dq2' then
      queues[#queues + 1] = queue
    end
  end
end
-- a live node's queue: its length, read with pcall (a key of another type replies an error
-- table instead of a number, and is no target; one command where TYPE and LLEN were two)
for _, queue in ipairs(queues) do
  local alive = tonumber(redis.call('ZSCORE', nodes, queue))
  if alive and alive > now and alive <= now + ahead then
    local length = redis.pcall('LLEN', queue)
    if type(length) == 'number' and length < bound then
      redis.call('LPUSH', queue, ARGV[4])
      return queue
    end
  end
end
return false
