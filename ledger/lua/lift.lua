-- lift.lua ends a suspension reason, or records an unknown reason as
-- lifted so that its suspension, arriving late, does nothing.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, suspension
-- ARGV[1] -> reason
--
-- KEYS[11], last ARGV -> with events on, the outbox and the events spec
--                        (lib.lua)
--
-- Returns 1 if the reason was in force, 0 otherwise.

local reason = ARGV[1]
local state = redis.call('HGET', K_SUSPENSION, reason)
if state == 'lifted' then
  return 0
end
redis.call('HSET', K_SUSPENSION, reason, 'lifted')
if state == 'suspended' then
  if redis.call('HINCRBY', K_ACCOUNT, 'suspended', -1) == 0 and EV then
    -- customer.reinstated, when the last reason is lifted.
    local a = current(EV.now, EV.retention)
    emit(a, 'customer.reinstated', 0, 0, 0, reason)
    save_account(a)
  end
  return 1
end
return 0
