-- extend.lua renews a live hold, so that it lives as long as its request:
-- its expiry becomes the later of the one it has and the one asked for.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, holds,
--                hold:expiry, hold:forget, and the lot keys to expire due lots
-- ARGV[1] -> hold id
-- ARGV[2] -> renewed expiry, unix ms (now + ttl)
-- ARGV[3] -> now, unix ms
-- ARGV[4] -> retention of closed holds, ms
--
-- Returns {status}:
--   {0}  the hold is live and expires no earlier than ARGV[2]
--   {1}  the hold had expired
--   {2}  the hold was released
--   {3}  the hold was settled
--   {4}  no such hold (never reserved, or forgotten)
--
-- Raising a score in hold:expiry keeps account.expire_at at most the
-- smallest score, so the bound needs no change.

local id = ARGV[1]
local expiry = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])

local a = current(now, retention)

local v = redis.call('HGET', K_HOLDS, id)
if not v then
  return save_account(a, {4})
end
if live_amount(v) then
  local score = redis.call('ZSCORE', K_HOLD_EXPIRY, id)
  if not score then
    extra().corrupt(a, 'live hold ' .. id .. ' has no expiry')
  end
  if expiry > tonumber(score) then
    redis.call('ZADD', K_HOLD_EXPIRY, int(expiry), id)
  end
  return save_account(a, {0})
end
local state = closed_state(a, id, v, now)
if state == 'e' then
  return save_account(a, {1})
elseif state == 'r' then
  return save_account(a, {2})
elseif state == 's' then
  return save_account(a, {3})
end
return save_account(a, {4})
