-- reserve.lua puts a hold on a customer's credits if enough are available.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..8] -> the customer's keys (lib.lua); uses account, hold:amount,
--               hold:expiry, hold:closed, hold:forget, suspension
-- ARGV[1] -> hold id
-- ARGV[2] -> amount, micro-credits (0 .. 2^53-1)
-- ARGV[3] -> expiry of the hold, unix ms
-- ARGV[4] -> now, unix ms (from the store's clock, never TIME)
-- ARGV[5] -> retention of closed holds, ms
-- ARGV[6] -> attempt token, random per Reserve call: a client that resends
--            the command after a lost reply finds its own hold, not a duplicate
--
-- Returns {status, available}:
--   {0, available after}  reserved (or this very call was already applied)
--   {1, available}        insufficient credits
--   {2, 0}                customer suspended
--   {3, 0}                hold id already used (live or closed within retention)

local id = ARGV[1]
local amount = tonumber(ARGV[2])
local expiry = ARGV[3]
local now = tonumber(ARGV[4])
local retention = tonumber(ARGV[5])
local attempt = ARGV[6]

expire_holds(now, retention)
prune(now, PRUNE_BATCH)

local live = redis.call('HGET', K_HOLD_AMOUNT, id)
if live then
  local _, owner = parse_hold(live)
  if owner == attempt then
    return {0, 0}
  end
  return {3, 0}
end
if closed_state(id, now) then
  return {3, 0}
end

local acct = redis.call('HMGET', K_ACCOUNT, 'balance', 'reserved', 'suspended')
if num(acct[3]) > 0 then
  return {2, 0}
end
local available = num(acct[1]) - num(acct[2])
if available < amount then
  return {1, available}
end

redis.call('HSET', K_HOLD_AMOUNT, id, int(amount) .. ' ' .. attempt)
redis.call('ZADD', K_HOLD_EXPIRY, expiry, id)
redis.call('HINCRBY', K_ACCOUNT, 'reserved', int(amount))
return {0, available - amount}
