-- account.lua reads a customer's balance, live holds and suspension, after
-- expiring holds past their ttl so that reserved is true at now.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..8] -> the customer's keys (lib.lua); uses account, hold:amount,
--               hold:expiry, hold:closed, hold:forget
-- ARGV[1] -> now, unix ms
-- ARGV[2] -> retention of closed holds, ms
--
-- Returns {balance, reserved, suspended}: micro-credits, micro-credits, and
-- the number of suspension reasons in force (0 when not suspended).

local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])

expire_holds(now, retention)
prune(now, PRUNE_BATCH)

local acct = redis.call('HMGET', K_ACCOUNT, 'balance', 'reserved', 'suspended')
return {num(acct[1]), num(acct[2]), num(acct[3])}
