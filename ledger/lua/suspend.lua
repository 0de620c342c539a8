-- suspend.lua records a suspension reason unless it is known already; a
-- lifted reason stays lifted (its tombstone is kept forever), so a late or
-- replayed suspension cannot re-suspend.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, suspension
-- ARGV[1] -> reason
--
-- KEYS[11], last ARGV -> with events on, the outbox and the events spec
--                        (lib.lua)
--
-- Returns 1 if the reason is new and now in force, 0 otherwise.

local reason = ARGV[1]
if redis.call('HEXISTS', K_SUSPENSION, reason) == 1 then
  return 0
end
redis.call('HSET', K_SUSPENSION, reason, 'suspended')
if redis.call('HINCRBY', K_ACCOUNT, 'suspended', 1) == 1 and EV then
  -- customer.suspended, when the first reason comes into force.
  local a = current(EV.now, EV.retention)
  emit(a, 'customer.suspended', 0, 0, 0, reason)
  save_account(a)
end
return 1
