-- journalindex.lua files a journal record under its customer, so that a
-- customer's records are read without scanning everyone's, and forgets the
-- customer's entries that are too old or beyond the maximum count.
-- (Stand-alone: lib.lua is not prepended.)
--
-- KEYS[1] -> tollgate:{<customer>}:journal   sorted set, every score 0: the ids of the
--                                           customer's records in fixed-width form
--                                           ("%015d-%010d"), so that they sort by age
-- ARGV[1] -> the record's id, fixed width
-- ARGV[2] -> cutoff id, fixed width: ids below it are forgotten
-- ARGV[3] -> the most entries to keep
-- ARGV[4] -> retention, ms: the key's PX, so a customer without events loses the index
--
-- Returns {1}. An entry whose record the journal has already forgotten is
-- skipped by readers and trimmed here in time.

redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('ZREMRANGEBYLEX', KEYS[1], '-', '(' .. ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1}
