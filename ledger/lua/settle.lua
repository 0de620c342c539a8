-- settle.lua closes a hold by charging the actual cost, taken from the
-- lots in burn order (debt beyond them), and appending the charge entry,
-- or replays the first settlement of the hold.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, holds,
--                hold:expiry, hold:forget, entries and the lot keys
-- ARGV[1] -> hold id
-- ARGV[2] -> actual cost, micro-credits (0 .. 2^53-1); may exceed the hold
-- ARGV[3] -> now, unix ms
-- ARGV[4] -> retention of closed holds, ms
-- ARGV[5] -> entry body (JSON built by the caller)
--
-- Returns {status, seq, ...}:
--   {0, seq, balance} charged now by entry seq, leaving balance (the caller
--                     knows the rest of the entry: it sent the body)
--   {1, seq, entry}  already settled by entry seq, whose stored text is
--                    entry; nothing changed
--   {2, 0, ''}       the hold was released
--   {3, 0, ''}       no such hold (never reserved, or forgotten)
--   {4, 0, ''}       the charge would take the balance below -(2^53-1)
--   {5, 0, balance}  no such hold and actual is 0: the settlement of a free
--                    hold reserve.lua did not store; nothing was written

local id = ARGV[1]
local actual = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local body = ARGV[5]

local a = current(now, retention)

local v = redis.call('HGET', K_HOLDS, id)
local amount = v and live_amount(v)
if not amount then
  local state, seq
  if v then
    state, seq = closed_state(a, id, v, now)
  end
  if not state then
    if actual == 0 then
      return save_account(a, {5, 0, a.balance})
    end
    return save_account(a, {3, 0, ''})
  elseif state == 'r' then
    return save_account(a, {2, 0, ''})
  elseif state == 's' then
    local raw = redis.call('HGET', K_ENTRIES, seq)
    if not raw then
      extra().corrupt(a, 'hold ' .. id .. ' settled by missing entry ' .. seq)
    end
    return save_account(a, {1, tonumber(seq), raw})
  end
  -- state 'e': the hold expired before it was settled; the usage
  -- happened all the same, so it is charged.
end
if not in_range(a.balance - actual) then
  return save_account(a, {4, 0, ''})
end
if amount then
  drop_hold(a, id, amount)
end
local seq = append_entry(a, -actual, body)
if actual > 0 then
  spend(a, actual)
end
close_hold(a, id, 's', now, retention, seq)
check_low(a, seq)
return save_account(a, {0, seq, a.balance})
