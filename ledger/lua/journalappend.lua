-- journalappend.lua adds a record at the newest end of the journal and
-- forgets the records that are too old or beyond the maximum count.
-- (Stand-alone: lib.lua is not prepended.)
--
-- KEYS[1] -> tollgate:journal:{journal}:log    stream: one entry per record, fields
--                                              c (customer, "" for none), t (type),
--                                              o (once key, "" for none), d (data)
-- KEYS[2] -> tollgate:journal:{journal}:once   hash: once key -> stream id of its record
-- ARGV[1] -> at, unix ms: where the record goes (after the newest record if that is later)
-- ARGV[2] -> cutoff, unix ms (from the store's clock): records before it are forgotten
-- ARGV[3] -> the most records to keep
-- ARGV[4] -> retention, ms: both keys' PX, so a journal nobody writes to goes away
-- ARGV[5] -> customer, "" for none
-- ARGV[6] -> type
-- ARGV[7] -> once key, "" for none
-- ARGV[8] -> data
--
-- Returns {1, id} with the record's stream id "<ms>-<seq>", or {0, ""} when
-- a record with the same once key is still kept (nothing added).

-- forget drops records from the oldest end while they are before the
-- cutoff or more than keep are left. Once the journal is full one record
-- goes per append; the budget keeps a call short after the maximum was
-- lowered.
local cutoff, max = tonumber(ARGV[2]), tonumber(ARGV[3])
local n = redis.call('XLEN', KEYS[1])
local function forget(keep)
  local budget = 1000
  while budget > 0 do
    local batch = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 100)
    local dropped = 0
    for _, e in ipairs(batch) do
      local ems = tonumber(string.match(e[1], '^(%d+)-'))
      if (n <= keep and ems >= cutoff) or budget == 0 then
        break
      end
      local f = e[2]
      for i = 1, #f, 2 do
        if f[i] == 'o' and f[i + 1] ~= '' and redis.call('HGET', KEYS[2], f[i + 1]) == e[1] then
          redis.call('HDEL', KEYS[2], f[i + 1])
        end
      end
      redis.call('XDEL', KEYS[1], e[1])
      n = n - 1
      dropped = dropped + 1
      budget = budget - 1
    end
    if dropped < #batch or #batch == 0 then
      return
    end
  end
end

-- Forget first, so that the once key of a forgotten record is free; then
-- make room for the record, if it is added.
forget(max)
local once = ARGV[7]
if once ~= '' and redis.call('HEXISTS', KEYS[2], once) == 1 then
  return {0, ''}
end
forget(max - 1)
local ms, seq = tonumber(ARGV[1]), 0
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local lms, lseq = string.match(last[1][1], '^(%d+)-(%d+)$')
  lms, lseq = tonumber(lms), tonumber(lseq)
  if lms >= ms then
    ms, seq = lms, lseq + 1
  end
end
local id = string.format('%d-%d', ms, seq)
redis.call('XADD', KEYS[1], id, 'c', ARGV[5], 't', ARGV[6], 'o', once, 'd', ARGV[8])
if once ~= '' then
  redis.call('HSET', KEYS[2], once, id)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return {1, id}
