-- account.lua reads a customer's balance, live holds, debt, next expiry
-- and suspension, after expiring holds past their ttl and lots past their
-- expiry so that the figures are true at now.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, holds,
--                hold:expiry, hold:forget, entries and the lot keys
-- ARGV[1] -> now, unix ms
-- ARGV[2] -> retention of closed holds, ms
-- ARGV[3] -> the most lots to add up for the next expiry (ledger.MaxLots;
--            0 when the caller needs only the expiries recorded)
--
-- Returns {balance, reserved, suspended, debt, next_at, next_amount}:
-- micro-credits, micro-credits, the number of suspension reasons in force
-- (0 when not suspended), micro-credits, the earliest expiry of an active
-- lot (unix ms, 0 when none) and the remaining credits of the lots that
-- expire then.

local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local max_lots = tonumber(ARGV[3])

local a = current(now, retention)
local next_at, next_amount = 0, 0
local first = extra().first_score(K_LOT_EXPIRY)
if first then
  next_at = first
  local ids = redis.call('ZRANGEBYSCORE', K_LOT_EXPIRY, int(first), int(first), 'LIMIT', 0, max_lots)
  local recs = {}
  if #ids > 0 then
    recs = redis.call('HMGET', K_LOTS, unpack(ids))
  end
  for i, rec in ipairs(recs) do
    if not rec then
      extra().corrupt(a, 'lot ' .. ids[i] .. ' in lots:expiry has no record')
    end
    local rem = lots().parse(a, ids[i], rec).rem
    if ids[i] == a.head then
      rem = a.head_rem
    end
    next_amount = next_amount + rem
  end
end
return save_account(a, {a.balance, a.reserved, a.suspended, a.debt, next_at, next_amount})
