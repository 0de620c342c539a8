-- unlock.lua deletes a lock only if the token still holds it, so a holder
-- whose time ran out cannot release the lock of the next holder.
-- (Stand-alone: lib.lua is not prepended.)
--
-- KEYS[1] -> tollgate:lock:<name>   string: "<expires_at_ms> <token>"
-- ARGV[1] -> token
--
-- Returns 1 if the lock was released, 0 if the token did not hold it.

local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^%-?%d+ (%S+)$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
