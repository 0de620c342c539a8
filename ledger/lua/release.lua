-- release.lua closes a hold without charging.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..8] -> the customer's keys (lib.lua); uses account, hold:amount,
--               hold:expiry, hold:closed, hold:forget
-- ARGV[1] -> hold id
-- ARGV[2] -> now, unix ms
-- ARGV[3] -> retention of closed holds, ms
--
-- Returns {status}:
--   {0}  released a live hold
--   {1}  released a hold that had expired (so a late Settle is refused)
--   {2}  nothing to do: already released or settled, or unknown

local id = ARGV[1]
local now = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])

expire_holds(now, retention)
prune(now, PRUNE_BATCH)

local live = redis.call('HGET', K_HOLD_AMOUNT, id)
if live then
  drop_hold(id, live)
  close_hold(id, 'r', now, retention)
  return {0}
end
if closed_state(id, now) == 'e' then
  close_hold(id, 'r', now, retention)
  return {1}
end
return {2}
