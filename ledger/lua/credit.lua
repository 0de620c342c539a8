-- credit.lua applies a signed credit atomically with its idempotency check
-- and appends its entry. The rule is the same as decideCredit in codec.go.
-- A positive credit repays debt first and keeps the rest as a new lot,
-- whose id is the entry's seq; one that comes already expired is followed
-- by its expire entry at once and repays nothing. A negative credit takes
-- from the lots (ARGV[9] first, then burn order) and the rest is debt.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, entries,
--                credits, and the lot keys
-- ARGV[1] -> idempotency key
-- ARGV[2] -> amount, signed micro-credits (nonzero, within +-(2^53-1));
--            for a cumulative key, the running total
-- ARGV[3] -> mode: "o" (one-off) or "c" (cumulative)
-- ARGV[4] -> kind (topup, grant, adjust, refund)
-- ARGV[5] -> entry body (JSON built by the caller)
-- ARGV[6] -> now, unix ms (from the store's clock, never TIME)
-- ARGV[7] -> expiry of the lot, unix ms (1 .. 2^43-2), or 0 for never
-- ARGV[8] -> priority of the lot (0 .. 100)
-- ARGV[9] -> the lot a debit takes from first, padded (pad), or ''
-- ARGV[10] -> reference of the lot (the entry's)
-- ARGV[11] -> the entry's time, RFC 3339 (for the expire entry of a
--             credit that comes expired)
--
-- Returns {status, seq, ...}:
--   {0, seq, balance, delta}  applied as entry seq, which added delta (for a
--                             cumulative key, the part not applied before)
--                             and left balance (before an expire entry
--                             that follows it)
--   {1, seq, entry}  already applied; entry seq is the key's latest entry
--   {2, 0, ''}       the key was used with another amount, sign, kind or mode
--   {3, 0, ''}       the balance would leave +-(2^53-1)

local key = ARGV[1]
local amount = tonumber(ARGV[2])
local mode = ARGV[3]
local kind = ARGV[4]
local body = ARGV[5]
local now = tonumber(ARGV[6])
local expires = tonumber(ARGV[7])
local priority = tonumber(ARGV[8])
local from = ARGV[9]
local ref = ARGV[10]
local at = ARGV[11]

local delta = amount
local rec = redis.call('HGET', K_CREDITS, key)
if rec then
  local rmode, rtotal, rseq, rkind = string.match(rec, '^(%a) (%-?%d+) (%d+) (%S+)$')
  if not rmode then
    error('tollgate: malformed credit record ' .. key)
  end
  local total = tonumber(rtotal)
  local replay = false
  if rmode ~= mode or rkind ~= kind then
    return {2, 0, ''}
  elseif mode == 'o' then
    if total ~= amount then
      return {2, 0, ''}
    end
    replay = true
  else
    if (total < 0) ~= (amount < 0) then
      return {2, 0, ''}
    end
    if math.abs(amount) <= math.abs(total) then
      replay = true
    else
      delta = amount - total
    end
  end
  if replay then
    local raw = redis.call('HGET', K_ENTRIES, rseq)
    if not raw then
      error('tollgate: credit ' .. key .. ' points to missing entry ' .. rseq)
    end
    return {1, tonumber(rseq), raw}
  end
end

local a = extra().current_lots(now)
if EV then
  -- The events carry the available credits: holds past their ttl must
  -- stop counting first, as on every read.
  extra().expire_holds(a, now, EV.retention)
end
if not in_range(a.balance + delta) then
  return save_account(a, {3, 0, ''})
end
local seq = append_entry(a, delta, body)
local balance = a.balance
redis.call('HSET', K_CREDITS, key, mode .. ' ' .. int(amount) .. ' ' .. int(seq) .. ' ' .. kind)
if EV then
  if delta > 0 then
    redis.call('HDEL', K_OUTBOX, 'dep')
    emit(a, 'credits.granted', seq, delta, seq, kind)
  elseif kind == 'refund' then
    emit(a, 'credits.clawed_back', seq, delta, from ~= '' and tonumber(from) or 0, kind)
  end
end
if delta < 0 then
  if from == '' then
    from = nil
  end
  spend(a, -delta, from)
elseif expires > 0 and expires <= now then
  local eseq = append_entry(a, -delta, lots().expire_body(int(seq), ref, at))
  if EV then
    emit(a, 'credits.expired', eseq, -delta, seq, '')
  end
else
  local repaid = math.min(a.debt, delta)
  a.debt = a.debt - repaid
  if delta > repaid then
    local L = lots()
    L.add(a, L.pad(seq), {rem = delta - repaid, amount = delta, prio = priority, exp = expires, created = now, kind = kind, ref = ref})
  end
end
check_low(a, a.seq)
return save_account(a, {0, seq, balance, delta})
