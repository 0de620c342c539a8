-- reserve.lua puts a hold on a customer's credits if enough are available.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, holds,
--                hold:expiry, hold:forget, and the lot keys to expire due lots
-- ARGV[1] -> hold id
-- ARGV[2] -> amount, micro-credits (0 .. 2^53-1)
-- ARGV[3] -> expiry of the hold, unix ms
-- ARGV[4] -> now, unix ms (from the store's clock, never TIME)
-- ARGV[5] -> retention of closed holds, ms
-- ARGV[6] -> attempt token, random per Reserve call: a client that resends
--            the command after a lost reply finds its own hold, not a duplicate
-- ARGV[7] -> the plan version the caller assumed (ReservePlan; -1 for none
--            known), or "" for Reserve, which does not check it (always
--            present: with events on, the events spec follows it)
--
-- Returns {status, available[, reserved]}:
--   {0, available after}  reserved (or this very call was already applied;
--                         or, for amount 0 and a customer without entries,
--                         allowed without storing a hold)
--   {1, available, reserved, lent}  insufficient credits; reserved is the
--                         sum of the live holds, so available + reserved is
--                         the balance; lent is the part of reserved that
--                         leases hold unused (lease.lua). When lent would
--                         make up the shortfall, the refusal also asks
--                         every replica to give its lease back
--                         (account.recall, for RECALL_MS): the caller may
--                         retry once they had time to.
--   {2, 0}                customer suspended
--   {3, 0}                hold id already used (live or closed within retention)
--   {4, version, subscription, order, override}
--                         ARGV[7] is not the stored plan version
--                         (account.plan_v, see plan_subscription.lua);
--                         the stored plan inputs follow; nothing reserved

local id = ARGV[1]
local amount = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local retention = tonumber(ARGV[5])
local attempt = ARGV[6]
local RECALL_MS = 2000 -- how long a refusal keeps leases from growing (ledger.LeaseStore)

local a = current(now, retention)

local v = redis.call('HGET', K_HOLDS, id)
if v then
  local _, owner = live_amount(v)
  if owner then
    if owner == attempt then
      return save_account(a, {0, a.balance - a.reserved})
    end
    return save_account(a, {3, 0})
  end
  if closed_state(a, id, v, now) then
    return save_account(a, {3, 0})
  end
end
if ARGV[7] and ARGV[7] ~= '' then
  local v = tonumber(redis.call('HGET', K_ACCOUNT, 'plan_v')) or 0
  if v ~= tonumber(ARGV[7]) then
    local p = redis.call('HMGET', K_ACCOUNT, 'plan_sub', 'plan_order', 'plan_ovr')
    return save_account(a, {4, v, p[1] or '', tonumber(p[2]) or 0, p[3] or ''})
  end
end
if a.suspended > 0 then
  return save_account(a, {2, 0})
end
local available = a.balance - a.reserved
if available < amount then
  local lfree = lent(a)
  if lfree > 0 and available + lfree >= amount then
    redis.call('HSET', K_ACCOUNT, 'recall', int(now + RECALL_MS))
  elseif EV and a.seq > 0 and redis.call('HGET', K_OUTBOX, 'dep') ~= '1' then
    -- balance.depleted: the first refusal since the last positive credit
    -- (credit.lua re-arms it); a customer without entries never had
    -- credits to run out of; a refusal that unused leases cause is not
    -- one (they are recalled, and the retry may succeed).
    redis.call('HSET', K_OUTBOX, 'dep', '1')
    emit(a, 'balance.depleted', 0, amount, 0, '')
  end
  return save_account(a, {1, available, a.reserved, lfree})
end
if amount == 0 and a.seq == 0 then
  -- A free request of a customer without entries: a zero hold holds
  -- nothing, and storing it would create keys for any id a client names
  -- (Store.Reserve). settle.lua settles it at zero by writing nothing.
  return save_account(a, {0, available})
end
-- ARGV[2] and ARGV[3] are the decimal integers int() would write.
redis.call('HSET', K_HOLDS, id, ARGV[2] .. ' ' .. attempt)
redis.call('ZADD', K_HOLD_EXPIRY, ARGV[3], id)
a.reserved = a.reserved + amount
if not a.expire_at or a.expire_at > expiry then
  a.expire_at = expiry
end
return save_account(a, {0, available - amount})
