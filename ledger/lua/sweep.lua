-- sweep.lua expires a batch of a customer's holds past their ttl and
-- forgets a batch of closed holds past their retention. The sweeper calls
-- it until it reports that nothing is left, so no call blocks Redis long.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..8] -> the customer's keys (lib.lua); uses account, hold:amount,
--               hold:expiry, hold:closed, hold:forget
-- ARGV[1] -> now, unix ms
-- ARGV[2] -> retention of closed holds, ms
-- ARGV[3] -> batch size
--
-- Returns {expired, more}: holds expired, and 1 if a batch was full (call
-- again) or 0 when done.

local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])

local expired, looked = expire_holds(now, retention, limit)
local pruned = prune(now, limit)
local more = 0
if looked >= limit or pruned >= limit then
  more = 1
end
return {expired, more}
