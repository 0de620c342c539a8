-- lots.lua lists a customer's active lots in burn order, after expiring
-- those past their expiry (and holds past their ttl, as every read does).
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, holds,
--                hold:expiry, hold:forget, entries and the lot keys
-- ARGV[1] -> now, unix ms
-- ARGV[2] -> retention of closed holds, ms
-- ARGV[3] -> the most lots to return (ledger.MaxLots)
--
-- Returns {id, lot, id, lot, ...}: padded lot ids and their stored text
-- (ledger/lots.go), first to spend first.

local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local max_lots = tonumber(ARGV[3])

local a = current(now, retention)
lots().flush_head(a)
local ids = redis.call('ZRANGE', K_LOT_BURN, 0, max_lots - 1)
if #ids == 0 then
  return save_account(a, {})
end
local recs = redis.call('HMGET', K_LOTS, unpack(ids))
local out = {}
for i, rec in ipairs(recs) do
  if not rec then
    extra().corrupt(a, 'lot ' .. ids[i] .. ' in lots:burn has no record')
  end
  out[#out + 1] = ids[i]
  out[#out + 1] = rec
end
return save_account(a, out)
