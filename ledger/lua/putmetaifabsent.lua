-- putmetaifabsent.lua stores a meta value only if the key has none, and
-- answers the value that stands either way.
-- (Stand-alone: lib.lua is not prepended.)
--
-- KEYS[1] -> tollgate:meta:<key>   string: the value
-- ARGV[1] -> value
--
-- Returns {stored, current}: {1, value} if the value was stored now, or
-- {0, current} with the value already there.

local current = redis.call('GET', KEYS[1])
if current then
  return {0, current}
end
redis.call('SET', KEYS[1], ARGV[1])
return {1, ARGV[1]}
