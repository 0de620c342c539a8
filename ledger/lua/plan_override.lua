-- plan_override.lua sets or removes a customer's plan override (opaque to
-- the ledger). lib.lua is prepended; plan_subscription.lua documents the
-- plan fields of the account hash.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account
-- ARGV[1] -> the override; empty removes it
--
-- Returns {status, version, subscription, order, override} after the call:
--   {0, ...}  changed: the version was bumped
--   {1, ...}  the same override (or none) was stored already; nothing changed

local value = ARGV[1]

local p = redis.call('HMGET', K_ACCOUNT, 'plan_v', 'plan_sub', 'plan_order', 'plan_ovr')
local v = tonumber(p[1]) or 0
local sub = p[2] or ''
local order = tonumber(p[3]) or 0
local ovr = p[4] or ''

if ovr == value then
  return {1, v, sub, order, ovr}
end
v = v + 1
if value == '' then
  redis.call('HSET', K_ACCOUNT, 'plan_v', int(v))
  redis.call('HDEL', K_ACCOUNT, 'plan_ovr')
else
  redis.call('HSET', K_ACCOUNT, 'plan_v', int(v), 'plan_ovr', value)
end
return extra().plan_changed(v, {0, v, sub, order, value})
