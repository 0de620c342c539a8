-- suspend.lua records a suspension reason unless it is known already; a
-- lifted reason stays lifted (its tombstone is kept forever), so a late or
-- replayed suspension cannot re-suspend.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, suspension
-- ARGV[1] -> reason
--
-- Returns 1 if the reason is new and now in force, 0 otherwise.

local reason = ARGV[1]
if redis.call('HEXISTS', K_SUSPENSION, reason) == 1 then
  return 0
end
redis.call('HSET', K_SUSPENSION, reason, 'suspended')
redis.call('HINCRBY', K_ACCOUNT, 'suspended', 1)
return 1
