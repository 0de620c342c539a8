-- credit.lua applies a signed credit atomically with its idempotency check
-- and appends its entry. The rule is the same as decideCredit in codec.go.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..7] -> the customer's keys (lib.lua); uses account, entries, credits
-- ARGV[1] -> idempotency key
-- ARGV[2] -> amount, signed micro-credits (nonzero, within +-(2^53-1));
--            for a cumulative key, the running total
-- ARGV[3] -> mode: "o" (one-off) or "c" (cumulative)
-- ARGV[4] -> kind (topup, grant, adjust, refund)
-- ARGV[5] -> entry body (JSON built by the caller)
--
-- Returns {status, seq, ...}:
--   {0, seq, balance, delta}  applied as entry seq, which added delta (for a
--                             cumulative key, the part not applied before)
--                             and left balance
--   {1, seq, entry}  already applied; entry seq is the key's latest entry
--   {2, 0, ''}       the key was used with another amount, sign, kind or mode
--   {3, 0, ''}       the balance would leave +-(2^53-1)

local key = ARGV[1]
local amount = tonumber(ARGV[2])
local mode = ARGV[3]
local kind = ARGV[4]
local body = ARGV[5]

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

local a = load_account()
if not in_range(a.balance + delta) then
  return {3, 0, ''}
end
local seq = append_entry(a, delta, body)
redis.call('HSET', K_CREDITS, key, mode .. ' ' .. int(amount) .. ' ' .. int(seq) .. ' ' .. kind)
return save_account(a, {0, seq, a.balance, delta})
