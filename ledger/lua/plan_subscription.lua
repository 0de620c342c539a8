-- plan_subscription.lua stores a customer's subscription state (opaque to
-- the ledger) unless a newer one is stored. lib.lua is prepended.
--
-- A customer's plan inputs live in four fields of the account hash, so
-- that reserve.lua checks them in the same atomic step as the credits:
--   plan_v      version, bumped by every change of plan_sub or plan_ovr
--   plan_sub    the subscription state; absent for none
--   plan_order  the ordering key plan_sub was written with
--   plan_ovr    the override (plan_override.lua); absent for none
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account
-- ARGV[1] -> the subscription state, not empty
-- ARGV[2] -> its ordering key (0 .. 2^53-1)
--
-- Returns {status, version, subscription, order, override} after the call:
--   {0, ...}  stored: the value changed and the version with it
--   {1, ...}  the same value is stored already: nothing but a larger
--             ordering key was written
--   {2, ...}  stale: a state with a larger ordering key is stored;
--             nothing changed

local value = ARGV[1]
local order = tonumber(ARGV[2])

local p = redis.call('HMGET', K_ACCOUNT, 'plan_v', 'plan_sub', 'plan_order', 'plan_ovr')
local v = tonumber(p[1]) or 0
local sub = p[2] or ''
local stored = tonumber(p[3]) or 0
local ovr = p[4] or ''

if sub ~= '' and order < stored then
  return {2, v, sub, stored, ovr}
end
if sub == value then
  if order > stored then
    redis.call('HSET', K_ACCOUNT, 'plan_order', int(order))
    stored = order
  end
  return {1, v, sub, stored, ovr}
end
v = v + 1
redis.call('HSET', K_ACCOUNT, 'plan_v', int(v), 'plan_sub', value, 'plan_order', int(order))
return extra().plan_changed(v, {0, v, value, order, ovr})
