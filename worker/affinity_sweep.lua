-- Host affinity: give the jobs waiting in dead nodes' direct queues back to the home queue
-- (worker/affinity.py). Run by every live node's heartbeat.
-- KEYS[1]  live nodes ZSET of the home queue: member = direct queue, score = heartbeat deadline
--          (ms, Redis clock)
-- KEYS[2]  the home queue (a kombu Redis list: consumers pop from the right)
-- ARGV[1]  forget a dead node this long (ms) after its deadline (its queue is swept until then:
--          a job forwarded just before the node died may arrive after the first sweep)
-- ARGV[2]  move at most this many messages per call
-- ARGV[3..] suffixes of the queue's other lists (kombu's priority lists)
-- Returns the number of messages moved. Order is kept: the oldest is consumed first.
local nodes = KEYS[1]
local home = KEYS[2]
local forget_ms = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local moved = 0
local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', now, 'WITHSCORES')
for i = 1, #dead, 2 do
  local queue = dead[i]
  local deadline = tonumber(dead[i + 1])
  local lists = {queue}
  for j = 3, #ARGV do
    lists[#lists + 1] = queue .. ARGV[j]
  end
  local left = 0
  for _, list in ipairs(lists) do
    while moved < budget do
      -- the newest (left end) goes to the home queue's consuming end first, so the oldest
      -- ends up nearest that end
      local message = redis.call('LMOVE', list, home, 'LEFT', 'RIGHT')
      if not message then
        break
      end
      moved = moved + 1
    end
    left = left + redis.call('LLEN', list)
  end
  if left == 0 and deadline + forget_ms < now then
    redis.call('ZREM', nodes, queue)
  end
end
return moved
