-- lease.lua syncs one replica's lease on a customer's credits (lease.go):
-- it applies the holds the replica closed since its last sync, then sizes
-- the lease for what comes next.
-- lib.lua is prepended; it documents the layout of the customer keys.
--
-- A lease is a hold like any other in holds and hold:expiry, under the
-- replica's lease id, whose live value is "<amount> L<free>:<sync>": free
-- is the part of the lease no request of the replica holds, as of this
-- sync, and sync the number of the sync that sized it. It
-- counts in account.reserved, so every other script (and every other
-- replica) sees it as reserved, and it expires as any hold does when its
-- replica stops syncing. account.lfree is the sum of the free parts of the
-- live leases: the events' figures leave it out of reserved (lib.lua), so
-- that credits lent to a replica and not yet used never announce
-- balance.low.
--
-- KEYS[1..10] -> the customer's keys (lib.lua); uses account, holds,
--                hold:expiry, hold:forget, entries and the lot keys
-- ARGV[1] -> lease id
-- ARGV[2] -> now, unix ms
-- ARGV[3] -> retention of closed holds, ms
-- ARGV[4] -> expiry of the lease, unix ms
-- ARGV[5] -> target: the lease the replica wants after this call
-- ARGV[6] -> in use: what the replica's open holds take of the lease after
--            the closes below
-- ARGV[7] -> allowance: what the replica may lend while this call is out;
--            the lease never shrinks below in use + allowance while the
--            credits are there, whatever else this call decides
-- ARGV[8] -> share: the most the lease may grow to, in percent of what is
--            available to the customer counting this lease (1..100)
-- ARGV[9] -> least: the lease must leave at least this much beyond what is
--            in use (the request that asked for it), or it is cut to what
--            is in use: a lease too small for the request would only keep
--            the request's own credits from it
-- ARGV[10] -> sync: this call's number, larger than any earlier call of
--            the replica's. A call whose number is not larger than the
--            stored one ran late (its reply was given up, a later sync
--            already sized the lease): its closes apply, as they are
--            idempotent, but it leaves the lease as it is
-- ARGV[11] -> fence: "1" within a lease ttl of a sync of the replica's
--            for this customer that failed (lease.go: fenceUntil), as the
--            failed one may still run, late; "0" otherwise. A call that
--            fences and leaves no lease keeps a marker -- a live lease of
--            nothing, numbered by this call, expiring as a lease would --
--            so that such a late call finds a later number and takes no
--            lease that no replica knows of (without a record to compare
--            with, it could not tell it is late). A marker, once there, is
--            renewed by every call that leaves no lease, and expires once
--            its replica stops syncing the customer
-- ARGV[12] -> n, the number of closes that follow, five arguments each:
--            kind ("s" settle, "r" release, "e" expire), hold id, when
--            it closed (unix ms: its retention starts then), actual cost
--            (settle; else 0), entry body (settle; else "")
--
-- Returns {lease, balance, reserved, plan_version, stop, lot_expiry, results...}:
--   lease        the lease's amount now (0: no lease)
--   balance, reserved  the account after the call (reserved counts the lease)
--   plan_version the stored plan version (account.plan_v)
--   stop         0, or the sum of 1 (suspended) and 2 (a refused
--                reservation asked leases back: account.recall is after
--                now): the lease was cut to what is in use, and the
--                replica must not lend from it (a plan change shows in
--                plan_version: the replica lends only to reservations made
--                under it)
--   lot_expiry   when the next lot expires (account.lot_expire_at), or 0:
--                the balance changes then without a script, so the
--                replica lends nothing from then until its next sync
--   results      three fields per close, in order:
--     {0, seq, balance after}  settle: charged now by entry seq
--     {1, seq, entry}          settle: already settled by entry seq (a
--                              resent sync); nothing changed
--     {2, 0, ''}               settle: the hold was released
--     {4, 0, ''}               settle: the charge would take the balance
--                              below -(2^53-1); nothing changed
--     {0, 0, ''}               release or expire: recorded
--     {5, 0, ''}               release or expire: the hold id was already
--                              recorded; nothing changed

local lease_id = ARGV[1]
local now = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])
local expiry = tonumber(ARGV[4])
local target = tonumber(ARGV[5])
local in_use = tonumber(ARGV[6])
local allowance = tonumber(ARGV[7])
local share = tonumber(ARGV[8])
local least = tonumber(ARGV[9])
local sync = tonumber(ARGV[10])
local fence = ARGV[11] == '1'
local n = tonumber(ARGV[12])

-- Charges are applied at the time they were made (at), as settle.lua
-- applies one when it comes: a lot that expired before a charge expires
-- first, one that expired after it still pays it. A sync carries charges
-- up to a flush interval old, and its now may even be older than the
-- last of them (a tick takes its time before it waits for the customer's
-- sync); lots due by now expire after the closes.
local lots_by = now
for i = 0, n - 1 do
  if ARGV[13 + 5 * i] == 's' then
    lots_by = math.min(lots_by, tonumber(ARGV[15 + 5 * i]))
  end
end
local a = current(now, retention, lots_by)

-- The lease as stored: live (amount, free; a marker is a live lease of
-- nothing, see ARGV[11]), or gone (expired, or never taken). The lease's
-- free part leaves lfree now and is put back below.
local cur, cur_free, cur_sync, live = 0, 0, 0, false
local lv = redis.call('HGET', K_HOLDS, lease_id)
if lv then
  local amount, tag = live_amount(lv)
  if amount then
    local f, n = string.match(tag, '^L(%d+):(%d+)$')
    cur, cur_free, cur_sync, live = amount, tonumber(f) or 0, tonumber(n) or 0, true
  end
end
local late = live and sync <= cur_sync
local lfree = (tonumber(redis.call('HGET', K_ACCOUNT, 'lfree')) or 0) - cur_free
if lfree < 0 then
  lfree = 0
end
-- While the closes run, the lease's free part is what they leave free.
a.lfree = lfree + math.max(0, cur - in_use)

-- The closes' holds values are read up front, WRITE_CHUNK ids per HMGET,
-- and their writes collected and sent after the loop (lib.lua's W). An id
-- that comes again in this call (lease.go sends each once, but the script
-- stands alone) is read anew after what the call wrote so far is sent.
local vals, seen = {}, {}
for i = 0, n - 1, WRITE_CHUNK do
  local ids = {}
  for j = i, math.min(i + WRITE_CHUNK, n) - 1 do
    ids[#ids + 1] = ARGV[14 + 5 * j]
  end
  local got = redis.call('HMGET', K_HOLDS, unpack(ids))
  for j = 1, #got do
    vals[i + j] = got[j]
  end
end
flush_writes()

local out = {0, 0, 0, 0, 0, 0}
for i = 0, n - 1 do
  local kind, id, at = ARGV[13 + 5 * i], ARGV[14 + 5 * i], tonumber(ARGV[15 + 5 * i])
  local v = vals[i + 1]
  if seen[id] then
    flush_writes()
    v = redis.call('HGET', K_HOLDS, id)
  end
  seen[id] = true
  local state, seq
  if v and not live_amount(v) then
    state, seq = closed_state(a, id, v, now)
  end
  if kind == 's' then
    local actual = tonumber(ARGV[16 + 5 * i])
    expire_lots_due(a, at)
    if state == 's' then
      local raw = redis.call('HGET', K_ENTRIES, seq)
      if not raw then
        extra().corrupt(a, 'hold ' .. id .. ' settled by missing entry ' .. seq)
      end
      out[#out + 1], out[#out + 2], out[#out + 3] = 1, tonumber(seq), raw
    elseif state == 'r' then
      out[#out + 1], out[#out + 2], out[#out + 3] = 2, 0, ''
    elseif not in_range(a.balance - actual) then
      out[#out + 1], out[#out + 2], out[#out + 3] = 4, 0, ''
    else
      -- A hold of the lease (or one whose expiry an earlier sync
      -- recorded): charged; a live hold of the same id elsewhere cannot
      -- be, lease.go never lends an id twice.
      local amount = v and live_amount(v)
      if amount then
        drop_hold(a, id, amount)
      end
      local s = append_entry(a, -actual, ARGV[17 + 5 * i])
      if actual > 0 then
        spend(a, actual)
      end
      close_hold(a, id, 's', at, retention, s)
      check_low(a, s)
      out[#out + 1], out[#out + 2], out[#out + 3] = 0, s, a.balance
    end
  else
    if v and (state or live_amount(v)) then
      out[#out + 1], out[#out + 2], out[#out + 3] = 5, 0, ''
    else
      close_hold(a, id, kind, at, retention)
      out[#out + 1], out[#out + 2], out[#out + 3] = 0, 0, ''
    end
  end
end
flush_writes()
W = nil
expire_lots_due(a, now)

-- Size the lease. It keeps what the replica's open holds use, as far as
-- the credits allow; beyond that it grows to the target, but never past
-- share percent of what is available counting the lease, and it does not
-- grow (it is cut to what is in use) while the customer is suspended or
-- a refused reservation asked for leases back.
local stop = 0
if a.suspended > 0 then
  stop = stop + 1
end
local recall = tonumber(redis.call('HGET', K_ACCOUNT, 'recall'))
if recall and recall > now then
  stop = stop + 2
end
local plan_v = tonumber(redis.call('HGET', K_ACCOUNT, 'plan_v')) or 0
local avail = a.balance - a.reserved + cur
if late then
  -- A later sync sized the lease already: leave it as it is.
  a.lfree = lfree + cur_free
  if a.lfree > 0 then
    redis.call('HSET', K_ACCOUNT, 'lfree', int(a.lfree))
  end
  out[1], out[2], out[3], out[4], out[5], out[6] = cur, a.balance, a.reserved, plan_v, stop, a.lot_expire_at or 0
  return save_account(a, out)
end
local lease = math.max(0, math.min(in_use + allowance, math.max(cur, avail)))
if stop == 0 then
  local grown = math.max(lease, math.min(target, math.floor(math.max(avail, 0) * share / 100)))
  if grown - in_use >= least then
    lease = grown
  end
end
local free = math.max(0, lease - in_use)
if lease > 0 then
  if lv and cur == 0 then
    -- The lease expired and is taken again: its closed record goes,
    -- from hold:forget too, or prune would later delete the live lease
    -- and leave its amount in reserved for good.
    redis.call('ZREM', K_HOLD_FORGET, lease_id)
  end
  redis.call('HSET', K_HOLDS, lease_id, int(lease) .. ' L' .. int(free) .. ':' .. int(sync))
  redis.call('ZADD', K_HOLD_EXPIRY, int(expiry), lease_id)
  a.reserved = a.reserved - cur + lease
  if not a.expire_at or a.expire_at > expiry then
    a.expire_at = expiry
  end
  a.lfree = lfree + free
elseif fence or live and cur == 0 then
  -- No lease, and a late call may still come (or came, and found the
  -- marker): the record becomes the marker, or stays it, renewed.
  if cur > 0 then
    drop_hold(a, lease_id, cur)
  end
  if lv and not live then
    redis.call('ZREM', K_HOLD_FORGET, lease_id)
  end
  redis.call('HSET', K_HOLDS, lease_id, '0 L0:' .. int(sync))
  redis.call('ZADD', K_HOLD_EXPIRY, int(expiry), lease_id)
  if not a.expire_at or a.expire_at > expiry then
    a.expire_at = expiry
  end
  a.lfree = lfree
elseif lv then
  -- No lease: its record goes (a lease leaves no closed record).
  if cur > 0 then
    drop_hold(a, lease_id, cur)
  end
  redis.call('HDEL', K_HOLDS, lease_id)
  redis.call('ZREM', K_HOLD_FORGET, lease_id)
  a.lfree = lfree
else
  a.lfree = lfree
end
if a.lfree > 0 then
  redis.call('HSET', K_ACCOUNT, 'lfree', int(a.lfree))
else
  redis.call('HDEL', K_ACCOUNT, 'lfree')
end
out[1], out[2], out[3], out[4], out[5], out[6] = lease, a.balance, a.reserved, plan_v, stop, a.lot_expire_at or 0
return save_account(a, out)
