-- trylock.lua takes a lock if it is free or its holder's time is up.
-- (Stand-alone: lib.lua is not prepended.)
--
-- KEYS[1] -> tollgate:lock:<name>   string: "<expires_at_ms> <token>"
-- ARGV[1] -> token, random per TryLock call
-- ARGV[2] -> now, unix ms (from the store's clock)
-- ARGV[3] -> expires at, unix ms
-- ARGV[4] -> ttl, ms: the key's PX, so Redis drops an abandoned lock by itself
--
-- Returns 1 if the lock is now held with the token (a resent call finds its
-- own token and succeeds again), 0 if someone else holds it.

local v = redis.call('GET', KEYS[1])
if v then
  local expires, token = string.match(v, '^(%-?%d+) (%S+)$')
  if token ~= ARGV[1] and expires and tonumber(expires) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[3] .. ' ' .. ARGV[1], 'PX', ARGV[4])
return 1
