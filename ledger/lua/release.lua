-- release.lua closes a hold without charging.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, holds,
--                hold:expiry, hold:forget, and the lot keys to expire due lots
-- ARGV[1] -> hold id
-- ARGV[2] -> now, unix ms
-- ARGV[3] -> retention of closed holds, ms
--
-- Returns {status}:
--   {0}  released a live hold
--   {1}  released a hold that had expired (so a late Settle is refused)
--   {2}  nothing to do: already released or settled, or unknown to a
--        customer without entries
--   {3}  unknown, now recorded as released (see below)

local id = ARGV[1]
local now = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])

local a = current(now, retention)

local v = redis.call('HGET', K_HOLDS, id)
if v then
  local amount = live_amount(v)
  if amount then
    drop_hold(a, id, amount)
    close_hold(a, id, 'r', now, retention)
    return save_account(a, {0})
  end
  local state = closed_state(a, id, v, now)
  if state == 'e' then
    close_hold(a, id, 'r', now, retention)
    return save_account(a, {1})
  end
  if state then
    return save_account(a, {2})
  end
  -- Closed longer ago than the retention: forgotten now, and as unknown
  -- as an id never seen.
end
-- No hold by this id, yet a Reserve of it may still be on its way: the
-- caller releases after a Reserve whose answer it did not get, and a
-- Reserve written before this call on another connection can run after it
-- (Redis paused, or hung, then serving both). Closing the id here refuses
-- that Reserve ({3}) instead of letting it hold credits nobody releases
-- until its expiry. A customer without entries has no credits to hold, and
-- gets no record.
if a.seq > 0 then
  close_hold(a, id, 'r', now, retention)
  return save_account(a, {3})
end
return save_account(a, {2})
