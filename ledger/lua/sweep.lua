-- sweep.lua expires a batch of a customer's holds past their ttl and
-- forgets a batch of closed holds past their retention. The sweeper calls
-- it until it reports that nothing is left, so no call blocks Redis long.
-- Unlike the other scripts it looks at both sorted sets whatever the
-- account's bounds say, and sets the bounds afresh.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..7] -> the customer's keys (lib.lua); uses account, holds,
--               hold:expiry, hold:forget
-- ARGV[1] -> now, unix ms
-- ARGV[2] -> retention of closed holds, ms
-- ARGV[3] -> batch size
--
-- Returns {expired, more}: holds expired, and 1 if a batch was full (call
-- again) or 0 when done.

local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])

local a = load_account()
local expired, looked = expire_holds(a, now, retention, limit, true)
local pruned = prune(a, now, limit, true)
local more = 0
if looked >= limit or pruned >= limit then
  more = 1
end
return save_account(a, {expired, more})
