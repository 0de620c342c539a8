-- sweep.lua expires a batch of a customer's holds past their ttl, a batch
-- of its lots past their expiry, and forgets a batch of closed holds past
-- their retention. The sweeper calls it until it reports that nothing is
-- left, so no call blocks Redis long. Unlike the other scripts it looks at
-- the sorted sets whatever the account's bounds say, and sets the bounds
-- afresh.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, holds,
--                hold:expiry, hold:forget, entries and the lot keys
-- ARGV[1] -> now, unix ms
-- ARGV[2] -> retention of closed holds, ms
-- ARGV[3] -> batch size
--
-- Returns {expired, more, lots}: holds expired, 1 if a batch was full
-- (call again) or 0 when done, and lots expired.

local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])

local X = extra()
local a = load_account()
X.adopt(a, now)
local expired, looked = X.expire_holds(a, now, retention, limit, true)
local lots = X.expire_lots(a, now, limit, true)
local pruned = X.prune(a, now, limit, true)
local more = 0
if looked >= limit or lots >= limit or pruned >= limit then
  more = 1
end
return save_account(a, {expired, more, lots})
