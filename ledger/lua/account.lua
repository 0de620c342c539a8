-- account.lua reads a customer's balance, live holds and suspension, after
-- expiring holds past their ttl so that reserved is true at now.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..7] -> the customer's keys (lib.lua); uses account, holds,
--               hold:expiry, hold:forget
-- ARGV[1] -> now, unix ms
-- ARGV[2] -> retention of closed holds, ms
--
-- Returns {balance, reserved, suspended}: micro-credits, micro-credits, and
-- the number of suspension reasons in force (0 when not suspended).

local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])

local a = current(now, retention)
return save_account(a, {a.balance, a.reserved, a.suspended})
