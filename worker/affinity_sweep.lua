-- Host affinity: give the jobs waiting in dead nodes' direct queues back to the home queue
-- (worker/affinity.py). Run by every live node's heartbeat.
-- KEYS[1]  live nodes ZSET of the home queue: member = direct queue, score = heartbeat deadline
--          (ms, Redis clock)
-- KEYS[2]  the home queue (a kombu Redis list: consumers pop from the right)
-- ARGV[1]  forget a dead node this long (ms) after its deadline (its queue is swept until then:
--          a job forwarded just before the node died may arrive after the first sweep)
-- ARGV[2]  move at most this many messages per call (and look at most at this many members)
-- ARGV[3]  a node's deadline is at most this far ahead (ms): a member further ahead is forged
--          (Redis is untrusted input) and treated as dead, so a queue nobody consumes is swept
-- ARGV[4..] suffixes of the queue's other lists (kombu's priority lists)
-- Only direct queues (lists named ``*.dq2``) are swept: a forged member naming the home queue,
-- another queue or a key of another type is dropped from the ZSET, never drained, and does not
-- stop the sweep of the others.
-- Returns the number of messages moved. Order is kept: the oldest is consumed first.
local nodes = KEYS[1]
local home = KEYS[2]
local forget_ms = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
local ahead = tonumber(ARGV[3])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function is_list(key)
  local kind = redis.call('TYPE', key)['ok']
  return kind == 'list' or kind == 'none'
end

local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', now, 'WITHSCORES', 'LIMIT', 0, budget)
local forged = redis.call('ZRANGEBYSCORE', nodes, '(' .. (now + ahead), '+inf', 'WITHSCORES', 'LIMIT', 0, budget)
for i = 1, #forged, 2 do
  dead[#dead + 1] = forged[i]
  dead[#dead + 1] = '0'  -- forgotten once empty
end

local moved = 0
for i = 1, #dead, 2 do
  local queue = dead[i]
  local deadline = tonumber(dead[i + 1])
  local lists = {queue}
  for j = 4, #ARGV do
    lists[#lists + 1] = queue .. ARGV[j]
  end
  local valid = string.sub(queue, -4) == '.dq2' and queue ~= home
  for _, list in ipairs(lists) do
    valid = valid and is_list(list)
  end
  if not valid then
    redis.call('ZREM', nodes, queue)
  else
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
end
return moved
