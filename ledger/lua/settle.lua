-- settle.lua closes a hold by charging the actual cost and appending the
-- charge entry, or replays the first settlement of the hold.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..8] -> the customer's keys (lib.lua); uses account, hold:amount,
--               hold:expiry, hold:closed, hold:forget, entries
-- ARGV[1] -> hold id
-- ARGV[2] -> actual cost, micro-credits (0 .. 2^53-1); may exceed the hold
-- ARGV[3] -> now, unix ms
-- ARGV[4] -> retention of closed holds, ms
-- ARGV[5] -> entry body (JSON built by the caller)
--
-- Returns {status, seq, entry}:
--   {0, seq, entry}  charged now; entry is the stored text of entry seq
--   {1, seq, entry}  already settled by entry seq; nothing changed
--   {2, 0, ''}       the hold was released
--   {3, 0, ''}       no such hold (never reserved, or forgotten)
--   {4, 0, ''}       the charge would take the balance below -(2^53-1)

local id = ARGV[1]
local actual = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local body = ARGV[5]

expire_holds(now, retention)
prune(now, PRUNE_BATCH)

local live = redis.call('HGET', K_HOLD_AMOUNT, id)
if not live then
  local state, seq = closed_state(id, now)
  if not state then
    return {3, 0, ''}
  elseif state == 'r' then
    return {2, 0, ''}
  elseif state == 's' then
    local raw = redis.call('HGET', K_ENTRIES, seq)
    if not raw then
      error('tollgate: hold ' .. id .. ' settled by missing entry ' .. seq)
    end
    return {1, tonumber(seq), raw}
  end
  -- state 'e': the hold expired before it was settled; the usage happened
  -- all the same, so it is charged.
end

if not in_range(balance() - actual) then
  return {4, 0, ''}
end
if live then
  drop_hold(id, live)
end
local seq, raw = append_entry(-actual, body)
close_hold(id, 's', now, retention, seq)
return {0, seq, raw}
