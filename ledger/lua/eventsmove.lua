-- eventsmove.lua appends events from customers' outboxes to the global
-- event log, each at most once, and trims the log to its retention.
-- (Stand-alone: lib.lua is not prepended. Its keys share the {events} hash
-- tag, so it runs on one Redis Cluster slot, apart from every customer's.)
--
-- KEYS[1] -> tollgate:events:{events}:log    hash: n -> "<customer> <cn> <record>" (ledger/outbox.go)
-- KEYS[2] -> tollgate:events:{events}:ids    hash: "<customer> <cn>" -> n, for every event in the log
-- KEYS[3] -> tollgate:events:{events}:state  hash: last (the newest n), first (the oldest n kept)
-- ARGV[1] -> now, unix ms (from the store's clock, never TIME)
-- ARGV[2] -> retention, ms: older events are trimmed
-- ARGV[3] -> the most events the log keeps
-- ARGV[4], ARGV[5], ... -> pairs: "<customer> <cn>" (the event's outbox
--            id), and its outbox record; in outbox order
--
-- Returns {added, last}: how many events were new, and the newest n.

local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local max_events = tonumber(ARGV[3])
local TRIM_BATCH = 1000

local st = redis.call('HMGET', KEYS[3], 'last', 'first')
local last = tonumber(st[1]) or 0
local first = tonumber(st[2]) or 1
local added = 0
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HEXISTS', KEYS[2], id) == 0 then
    last = last + 1
    redis.call('HSET', KEYS[1], string.format('%d', last), id .. ' ' .. ARGV[i + 1])
    redis.call('HSET', KEYS[2], id, string.format('%d', last))
    added = added + 1
  end
end

local trimmed = 0
while first <= last and trimmed < TRIM_BATCH do
  local key = string.format('%d', first)
  local v = redis.call('HGET', KEYS[1], key)
  local drop = true
  if v then
    local id, created = string.match(v, '^(%S+ %S+) %S+ (%d+) ')
    drop = last - first + 1 > max_events or not created or tonumber(created) < now - retention
    if drop then
      if id then
        redis.call('HDEL', KEYS[2], id)
      end
      redis.call('HDEL', KEYS[1], key)
    end
  end
  if not drop then
    break
  end
  first = first + 1
  trimmed = trimmed + 1
end
redis.call('HSET', KEYS[3], 'last', string.format('%d', last), 'first', string.format('%d', first))
return {added, last}
