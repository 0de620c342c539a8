-- lib.lua is prepended to every ledger script (not to trylock.lua and
-- unlock.lua), so that the scripts share one key layout and one set of
-- helpers. It defines locals only and returns nothing.
--
-- Every ledger script receives the same ten KEYS, all of one customer,
-- all sharing the {customer} hash tag so that a script touches one Redis
-- Cluster slot. Scripts never build key names.
--
-- KEYS[1] -> tollgate:{<customer>}:account      hash: balance, reserved, seq, suspended,
--                                                expire_at, forget_at, debt, lot_expire_at,
--                                                lots, head, head_rem (below), and for
--                                                leases lfree, recall (lease.lua)
-- KEYS[2] -> tollgate:{<customer>}:holds        hash: hold id -> live "<amount> <attempt>", or
--                                                closed "<state> <forget_at_ms>[ <seq>]",
--                                                state e(xpired) | r(eleased) | s(ettled, by entry seq);
--                                                a lease's live value is "<amount> L<free>:<sync>", a lease
--                                                marker's "0 L0:<sync>" (lease.lua)
-- KEYS[3] -> tollgate:{<customer>}:hold:expiry  zset: live hold ids, score = expiry (unix ms)
-- KEYS[4] -> tollgate:{<customer>}:hold:forget  zset: closed hold ids, score = forget-at (unix ms)
-- KEYS[5] -> tollgate:{<customer>}:entries      hash: seq -> "<amount> <balance_after> <json>"
-- KEYS[6] -> tollgate:{<customer>}:credits      hash: idempotency key -> "<o|c> <total> <seq> <kind>"
-- KEYS[7] -> tollgate:{<customer>}:suspension   hash: reason -> "suspended" | "lifted"
-- KEYS[8] -> tollgate:{<customer>}:lots         hash: lot id -> "<remaining> <amount> <priority>
--                                                <expires_ms|0> <created_ms> <kind> <reference>"
-- KEYS[9] -> tollgate:{<customer>}:lots:burn    zset: lot id, score = burn order (lot_score)
-- KEYS[10] -> tollgate:{<customer>}:lots:expiry zset: expiring lot ids, score = expiry (unix ms)
-- KEYS[11] -> tollgate:{<customer>}:outbox      only with events on; see below
--
-- Lots (ledger/lots.go): every positive credit creates one, with the
-- credit entry's seq as its id; in the three lot keys the id is
-- zero-padded to 16 digits (pad), so that members of equal score sort
-- oldest first. The lots hash holds only active lots (remaining > 0);
-- burn order is the lots:burn zset, whose first member is the next lot
-- to spend. account.balance = sum of remaining - account.debt, and debt
-- is positive only while no lot is active. An expired lot stays in the
-- keys until some script (or the sweeper) expires it, so every script
-- that reads the balance or spends lots first calls expire_lots, which
-- writes an expire entry for what the lot held.
--
-- account.head, when set, is the padded id of the first lot in burn order
-- and account.head_rem its remaining credits; that lot's record in the
-- lots hash may then hold a stale (larger) remaining. A charge that does
-- not use the head up changes head_rem alone, in the account it writes
-- anyway, so it touches no lot key. Whatever could put another lot first
-- (add_lot) writes head_rem into the record and clears the cache; dropping
-- the head lot clears it; readers of records use head_rem for the head
-- (or write it into the record first, flush_head).
--
-- account.lots is the balance the lots held when a script of this
-- version last saved the account. An account with entries but without it
-- kept its balance before lots existed; one where it differs from
-- balance was changed since by an older tollgate sharing this Redis (a
-- rolling upgrade). adopt brings the lots in line before anything else.
--
-- account.reserved is the sum of the amounts of the live holds. An expired
-- hold stays live until some script (or the sweeper) closes it, so every
-- script that reads reserved or a hold's state first calls expire_holds.
--
-- account.expire_at is at most the smallest score in hold:expiry, and is
-- absent only when hold:expiry is empty; account.forget_at is the same for
-- hold:forget, and account.lot_expire_at for lots:expiry. They let a
-- script see from the account alone, which it reads anyway, that no hold
-- can have expired, no lot is due and no closed hold is due to be
-- forgotten, instead of asking the sorted sets on every call. A script
-- that adds to a set lowers the bound; one that empties the due part of a
-- set sets it to the set's new smallest score.
--
-- Numbers: Lua numbers are doubles, exact up to 2^53. The Go side keeps every
-- amount and balance within +-(2^53-1), and every number handed to
-- redis.call is formatted with int() so that Redis never sees "1e+15".

local K_ACCOUNT = KEYS[1]
local K_HOLDS = KEYS[2]
local K_HOLD_EXPIRY = KEYS[3]
local K_HOLD_FORGET = KEYS[4]
local K_ENTRIES = KEYS[5]
local K_CREDITS = KEYS[6]
local K_SUSPENSION = KEYS[7]
local K_LOTS = KEYS[8]
local K_LOT_BURN = KEYS[9]
local K_LOT_EXPIRY = KEYS[10]

local MAX_AMOUNT = 9007199254740991 -- 2^53-1, ledger.MaxAmount
local PRUNE_BATCH = 16 -- closed holds forgotten per script, beyond Sweep
local function int(n)
  return string.format('%d', n)
end

local function in_range(n)
  return n >= -MAX_AMOUNT and n <= MAX_AMOUNT
end

-- Outbound events (ledger/outbox.go). With events on, Go passes the
-- customer's outbox as KEYS[11] -- tollgate:{<customer>}:outbox, hash:
-- n (the last event number), low (the smallest balance.low threshold
-- announced and not re-armed; 0 none), dep (1 once balance.depleted was
-- announced), and <n> -> the event record of outbox.go -- and the events
-- spec as the last ARGV: "<now_ms> <retention_ms> <threshold>..."
-- (thresholds highest first). Without KEYS[11] nothing below runs.
local K_OUTBOX = KEYS[11]
local EV
local EMITTED = false -- an event was written: the reply says so (save_account)
local EVENTS_MARK = 'tollgate:events' -- ledger.eventsMark

-- lent returns the credits leases hold and no request uses (lease.lua):
-- reserved, for the events' figures, leaves them out, since a lease is
-- only lent, not spent, and a refusal they cause recalls them
-- (reserve.lua). lease.lua keeps the current figure in a.lfree.
local function lent(a)
  if not a.lfree then
    a.lfree = tonumber(redis.call('HGET', K_ACCOUNT, 'lfree')) or 0
  end
  return a.lfree
end

-- emit writes event typ of the account a into the outbox; entry, amount
-- and lot are numbers (0: none), text a string. With events off it is
-- nil: every caller checks EV first.
local emit

-- check_low announces balance.low for each threshold the available
-- credits of a fell below since the last announcement, caused by entry,
-- and re-arms those it is at or above again (eventConfig in outbox.go).
-- Without a stored level (events just turned on), the level of the
-- account as loaded counts as announced. With events off it does nothing.
local check_low

-- The events helpers are defined only with events on: the chunk runs on
-- every EVALSHA, and each function it defines costs a closure.
if K_OUTBOX then
  EV = {low = {}}
  local i = 0
  for n in string.gmatch(ARGV[#ARGV], '%d+') do
    i = i + 1
    if i == 1 then
      EV.now = tonumber(n)
    elseif i == 2 then
      EV.retention = tonumber(n)
    else
      EV.low[#EV.low + 1] = tonumber(n)
    end
  end

  emit = function(a, typ, entry, amount, lot, text)
    local n = redis.call('HINCRBY', K_OUTBOX, 'n', 1)
    redis.call('HSET', K_OUTBOX, int(n), typ .. ' ' .. int(EV.now) .. ' ' .. int(a.balance) .. ' ' .. int(a.balance - a.reserved + lent(a))
      .. ' ' .. int(entry) .. ' ' .. int(amount) .. ' ' .. int(lot) .. ' ' .. text)
    EMITTED = true
  end

  -- low_level is the smallest threshold available is below, 0 when none.
  local function low_level(available)
    local s = 0
    for _, t in ipairs(EV.low) do
      if available < t then
        s = t
      end
    end
    return s
  end

  check_low = function(a, entry)
    if #EV.low == 0 then
      return
    end
    local available = a.balance - a.reserved + lent(a)
    local v = redis.call('HGET', K_OUTBOX, 'low')
    local prev = tonumber(v) or low_level(a.balance0 - a.reserved0 + lent(a))
    for _, t in ipairs(EV.low) do
      if available < t and (prev == 0 or t < prev) then
        emit(a, 'balance.low', entry, t, 0, '')
      end
    end
    local level = low_level(available)
    if level ~= prev or not v then
      redis.call('HSET', K_OUTBOX, 'low', int(level))
    end
  end
else
  check_low = function() end
end

-- load_account reads the account into a table: balance, reserved, seq,
-- suspended and debt as numbers (0 when absent), expire_at, forget_at,
-- lot_expire_at and lots as numbers or nil. It keeps the values read, so
-- that save_account writes back only what changed. Scripts that use lots
-- call adopt next (current does).
local function load_account()
  local v = redis.call('HMGET', K_ACCOUNT, 'balance', 'reserved', 'seq', 'expire_at', 'forget_at', 'suspended', 'debt', 'lot_expire_at', 'lots', 'head', 'head_rem')
  -- A missing field is false in the reply; tonumber makes it nil.
  local balance, reserved, seq = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
  local expire_at, forget_at, debt = tonumber(v[4]), tonumber(v[5]), tonumber(v[7]) or 0
  local lot_expire_at, head, head_rem = tonumber(v[8]), v[10] or nil, tonumber(v[11])
  -- One constructor names every field, the values read included, so that
  -- Lua sizes the table once instead of growing it.
  return {
    balance = balance,
    reserved = reserved,
    seq = seq,
    expire_at = expire_at,
    forget_at = forget_at,
    suspended = tonumber(v[6]) or 0,
    debt = debt,
    lot_expire_at = lot_expire_at,
    lots = tonumber(v[9]),
    head = head,
    head_rem = head_rem,
    balance0 = balance,
    reserved0 = reserved,
    seq0 = seq,
    expire_at0 = expire_at,
    forget_at0 = forget_at,
    debt0 = debt,
    lot_expire_at0 = lot_expire_at,
    head0 = head,
    head_rem0 = head_rem,
  }
end

-- save_field adds field to set when its value changed, and to del when
-- it became nil.
local function save_field(set, del, name, v, v0)
  if v ~= v0 then
    if v then
      set[#set + 1] = name
      set[#set + 1] = int(v)
    else
      del[#del + 1] = name
    end
  end
end

-- save_account writes the fields of a that changed since load_account in
-- one HSET (suspended is only ever changed by suspend.lua and lift.lua,
-- with HINCRBY), deletes a bound whose set became empty, and records in
-- account.lots the balance the lots now hold. It returns reply, so that a
-- script can end with "return save_account(a, reply)".
local function save_account(a, reply)
  local set, del = {}, {}
  save_field(set, del, 'balance', a.balance, a.balance0)
  save_field(set, del, 'reserved', a.reserved, a.reserved0)
  save_field(set, del, 'seq', a.seq, a.seq0)
  save_field(set, del, 'expire_at', a.expire_at, a.expire_at0)
  save_field(set, del, 'forget_at', a.forget_at, a.forget_at0)
  save_field(set, del, 'debt', a.debt, a.debt0)
  save_field(set, del, 'lot_expire_at', a.lot_expire_at, a.lot_expire_at0)
  save_field(set, del, 'head_rem', a.head_rem, a.head_rem0)
  if a.head ~= a.head0 then
    if a.head then
      set[#set + 1] = 'head'
      set[#set + 1] = a.head
    else
      del[#del + 1] = 'head'
    end
  end
  if a.seq > 0 and a.lots ~= a.balance then
    set[#set + 1] = 'lots'
    set[#set + 1] = int(a.balance)
  end
  if #set > 0 then
    redis.call('HSET', K_ACCOUNT, unpack(set))
  end
  if #del > 0 then
    redis.call('HDEL', K_ACCOUNT, unpack(del))
  end
  if EMITTED and type(reply) == 'table' then
    reply[#reply + 1] = EVENTS_MARK
  end
  return reply
end

-- live_amount returns the amount and attempt token of a holds value, or
-- nil when the value is a closed hold (closed values start with a letter).
local function live_amount(v)
  local amount, attempt = string.match(v, '^(%d+) (%S+)$')
  if not amount then
    return nil
  end
  return tonumber(amount), attempt
end

-- W, while a script collects writes (lease.lua, which applies hundreds
-- of closes in one call), holds the writes of close_hold and
-- append_entry -- holds and entries fields, hold:forget members -- so
-- that they reach Redis in one HSET or ZADD per key and WRITE_CHUNK
-- values instead of one call each. Until flush_writes sends them the
-- script must not read those fields back: lease.lua flushes before it
-- reads a hold it closed itself.
local W

-- WRITE_CHUNK bounds the values one flushed call (or lease.lua's HMGET)
-- carries: unpack takes at most the 8000 values of Lua's C stack. It is
-- even, as the values are pairs.
local WRITE_CHUNK = 1024

-- flush_writes sends what W holds, in the order written (a field written
-- twice: the later wins, as it would have), and starts collecting
-- afresh; its first call only starts. The script sets W to nil to stop.
local function flush_writes()
  if W then
    for _, w in ipairs({{'HSET', K_ENTRIES, W.entries}, {'HSET', K_HOLDS, W.holds}, {'ZADD', K_HOLD_FORGET, W.forget}}) do
      local t = w[3]
      for i = 1, #t, WRITE_CHUNK do
        redis.call(w[1], w[2], unpack(t, i, math.min(i + WRITE_CHUNK - 1, #t)))
      end
    end
  end
  W = {entries = {}, holds = {}, forget = {}}
end

-- close_hold records hold id as closed in state ('e', 'r' or 's' with the
-- settling entry's seq) until now + retention.
local function close_hold(a, id, state, now, retention, seq)
  local forget_at = now + retention
  local at = int(forget_at)
  local v = state .. ' ' .. at
  if seq then
    v = v .. ' ' .. int(seq)
  end
  if W then
    local h, f, n = W.holds, W.forget, #W.holds
    h[n + 1], h[n + 2], f[n + 1], f[n + 2] = id, v, at, id
  else
    redis.call('HSET', K_HOLDS, id, v)
    redis.call('ZADD', K_HOLD_FORGET, at, id)
  end
  if not a.forget_at or a.forget_at > forget_at then
    a.forget_at = forget_at
  end
end

-- drop_hold takes live hold id of amount out of reserved and hold:expiry;
-- the caller closes it.
local function drop_hold(a, id, amount)
  redis.call('ZREM', K_HOLD_EXPIRY, id)
  a.reserved = a.reserved - amount
end

-- extra returns the helpers of the less common paths (below).
local extra

-- closed_state returns the state and entry seq of closed hold id, whose
-- holds value is v, or nil when its retention ended (it is then forgotten
-- at once, whether or not prune got to it, so that both stores agree).
local function closed_state(a, id, v, now)
  local state, forget_at, seq = string.match(v, '^(%a) (%-?%d+) ?(%d*)$')
  if not state then
    extra().corrupt(a, 'malformed hold ' .. id)
  end
  if tonumber(forget_at) <= now then
    redis.call('HDEL', K_HOLDS, id)
    redis.call('ZREM', K_HOLD_FORGET, id)
    return nil
  end
  return state, seq
end

-- append_entry adds amount to the balance, stores the entry with the new
-- balance, and returns the entry's seq.
local function append_entry(a, amount, body)
  a.seq = a.seq + 1
  a.balance = a.balance + amount
  local seq, v = int(a.seq), int(amount) .. ' ' .. int(a.balance) .. ' ' .. body
  if W then
    local e, n = W.entries, #W.entries
    e[n + 1], e[n + 2] = seq, v
  else
    redis.call('HSET', K_ENTRIES, seq, v)
  end
  return a.seq
end

-- The lot helpers are built on first use (lots), not by every script
-- call: a script runs its whole chunk on every EVALSHA, and each local
-- function the chunk defines costs a closure, so a reservation, or a
-- charge the head lot covers, defines and runs only what it needs.
local lotlib
local function lots()
  if lotlib then
    return lotlib
  end
  local PRIORITY_UNIT = 8796093022208 -- 2^43: lot_score's priority step
  local NEVER = PRIORITY_UNIT - 1 -- lot_score's expiry of a lot that never expires
  local DEFAULT_PRIORITY = 50 -- ledger.DefaultPriority
  local MIGRATED_LOT = '0000000000000000' -- pad(0), ledger.MigratedLot

  -- pad returns lot id n as the members and fields of the lot keys name
  -- it.
  local function pad(n)
    return string.format('%016d', n)
  end

  -- lot_score is a lot's score in lots:burn: priority, then expiry (never
  -- last), in one exact double (7 + 43 bits). Equal scores sort by
  -- member, the padded id: oldest first.
  local function lot_score(priority, expires)
    if expires == 0 then
      expires = NEVER
    end
    return priority * PRIORITY_UNIT + expires
  end

  -- format and parse are the lot text of ledger/lots.go.
  local function format(l)
    return int(l.rem) .. ' ' .. int(l.amount) .. ' ' .. int(l.prio) .. ' ' .. int(l.exp) .. ' ' .. int(l.created) .. ' ' .. l.kind .. ' ' .. l.ref
  end

  local function parse(a, pid, rec)
    local rem, amount, prio, exp, created, kind, ref = string.match(rec, '^(%d+) (%d+) (%d+) (%d+) (%-?%d+) (%S+) (.*)$')
    if not rem then
      extra().corrupt(a, 'malformed lot ' .. pid)
    end
    return {rem = tonumber(rem), amount = tonumber(amount), prio = tonumber(prio), exp = tonumber(exp), created = tonumber(created), kind = kind, ref = ref}
  end

  -- record returns the parsed record of lot pid, which must exist.
  local function record(a, pid, where)
    local rec = redis.call('HGET', K_LOTS, pid)
    if not rec then
      extra().corrupt(a, 'lot ' .. pid .. ' in ' .. where .. ' has no record')
    end
    return parse(a, pid, rec)
  end

  -- flush_head writes the cached remaining of the head lot into its
  -- record, so that the record is true again; the cache stays.
  local function flush_head(a)
    if not a.head then
      return
    end
    local l = record(a, a.head, 'account.head')
    l.rem = a.head_rem
    redis.call('HSET', K_LOTS, a.head, format(l))
  end

  -- add stores lot pid (padded id) in the three lot keys and lowers
  -- account.lot_expire_at to its expiry. The new lot may burn first, so
  -- the head cache is written back and cleared.
  local function add(a, pid, l)
    flush_head(a)
    a.head, a.head_rem = nil, nil
    redis.call('HSET', K_LOTS, pid, format(l))
    redis.call('ZADD', K_LOT_BURN, int(lot_score(l.prio, l.exp)), pid)
    if l.exp > 0 then
      redis.call('ZADD', K_LOT_EXPIRY, int(l.exp), pid)
      if not a.lot_expire_at or a.lot_expire_at > l.exp then
        a.lot_expire_at = l.exp
      end
    end
  end

  -- drop removes lot pid from the three lot keys (and from the head
  -- cache). It leaves account.lot_expire_at as it is: a bound below the
  -- smallest expiry only costs one look at lots:expiry.
  local function drop(a, pid)
    redis.call('HDEL', K_LOTS, pid)
    redis.call('ZREM', K_LOT_BURN, pid)
    redis.call('ZREM', K_LOT_EXPIRY, pid)
    if pid == a.head then
      a.head, a.head_rem = nil, nil
    end
  end

  -- json_string quotes s as JSON, as appendJSONString in ledger/codec.go
  -- does for valid UTF-8 (references are checked to be valid UTF-8).
  local JSON_ESCAPES = {['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}
  local function json_string(str)
    local quoted = string.gsub(str, '[%z\1-\31"\\]', function(c)
      return JSON_ESCAPES[c] or string.format('\\u%04x', string.byte(c))
    end)
    return '"' .. quoted .. '"'
  end

  -- rfc3339 formats unix ms ms (1970 to 9999) as Go's time.RFC3339Nano
  -- does in UTC: no fraction for a whole second, else trailing zeros
  -- cut. The date is Howard Hinnant's civil_from_days.
  local function rfc3339(ms)
    local days = math.floor(ms / 86400000)
    local rest = ms - days * 86400000
    local z = days + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local d = doy - math.floor((153 * mp + 2) / 5) + 1
    local m = mp < 10 and mp + 3 or mp - 9
    local y = yoe + era * 400
    if m <= 2 then
      y = y + 1
    end
    local secs = math.floor(rest / 1000)
    local frac = rest - secs * 1000
    local text = string.format('%04d-%02d-%02dT%02d:%02d:%02d', y, m, d, math.floor(secs / 3600), math.floor(secs / 60) % 60, secs % 60)
    if frac > 0 then
      text = text .. (string.gsub(string.format('.%03d', frac), '0+$', ''))
    end
    return text .. 'Z'
  end

  -- expire_body is the entry body of the expiry of lot id (decimal) whose
  -- reference is ref, at the RFC 3339 time at: the text entryBody.json in
  -- ledger/codec.go writes for it.
  local function expire_body(id, ref, at)
    local b = '{"kind":"expire"'
    if ref ~= '' then
      b = b .. ',"reference":' .. json_string(ref)
    end
    return b .. ',"lot":"' .. id .. '","at":"' .. at .. '"}'
  end

  -- expire expires the lots whose expiry is at or before now, oldest
  -- expiry first, each with an expire entry dated at its expiry, and
  -- returns how many it expired; with limit, at most limit of them.
  local function expire(a, now, limit)
    local ids
    if limit then
      ids = redis.call('ZRANGEBYSCORE', K_LOT_EXPIRY, '-inf', int(now), 'LIMIT', 0, limit)
    else
      ids = redis.call('ZRANGEBYSCORE', K_LOT_EXPIRY, '-inf', int(now))
    end
    for _, pid in ipairs(ids) do
      local l = record(a, pid, 'lots:expiry')
      if pid == a.head then
        l.rem, a.head, a.head_rem = a.head_rem, nil, nil
      end
      redis.call('HDEL', K_LOTS, pid)
      redis.call('ZREM', K_LOT_BURN, pid)
      local seq = append_entry(a, -l.rem, expire_body(int(tonumber(pid)), l.ref, rfc3339(l.exp)))
      if EV then
        emit(a, 'credits.expired', seq, -l.rem, tonumber(pid), '')
      end
    end
    if #ids > 0 then
      -- The ids are the set's lowest scores, so its first #ids ranks.
      redis.call('ZREMRANGEBYRANK', K_LOT_EXPIRY, 0, #ids - 1)
      check_low(a, a.seq)
    end
    a.lot_expire_at = extra().first_score(K_LOT_EXPIRY)
    return #ids
  end

  -- spend takes amount (> 0) from the lots: from lot from (a padded id,
  -- or nil) first if it is active, then in burn order through the head
  -- cache; what no lot covers becomes debt. Each step removes a lot or
  -- finishes, so it costs one look at lots:burn per lot it uses up.
  local function spend(a, amount, from)
    if from and from ~= a.head then
      local rec = redis.call('HGET', K_LOTS, from)
      if rec then
        local l = parse(a, from, rec)
        if l.rem > amount then
          l.rem = l.rem - amount
          redis.call('HSET', K_LOTS, from, format(l))
          return
        end
        drop(a, from)
        amount = amount - l.rem
      end
    end
    while amount > 0 do
      if not a.head then
        local pid = redis.call('ZRANGE', K_LOT_BURN, 0, 0)[1]
        if not pid then
          a.debt = a.debt + amount
          return
        end
        a.head, a.head_rem = pid, record(a, pid, 'lots:burn').rem
      end
      if a.head_rem > amount then
        a.head_rem = a.head_rem - amount
        return
      end
      amount = amount - a.head_rem
      drop(a, a.head)
    end
  end

  -- never is a lot that never expires, of DEFAULT_PRIORITY, kind adjust
  -- and reference "migration": what migrate and adopt create.
  local function never(remaining, amount, now)
    return {rem = remaining, amount = amount, prio = DEFAULT_PRIORITY, exp = 0, created = now, kind = 'adjust', ref = 'migration'}
  end

  -- adopt: see the core adopt below.
  local function adopt(a, now)
    if not a.lots then
      -- An account kept before lots: see ledger.MigratedLot.
      if a.balance > 0 then
        add(a, MIGRATED_LOT, never(a.balance, a.balance, now))
      elseif a.balance < 0 then
        a.debt = -a.balance
      end
      return
    end
    local change = a.balance - a.lots
    if change < 0 then
      spend(a, -change)
    elseif change > 0 then
      local repaid = math.min(a.debt, change)
      a.debt = a.debt - repaid
      if change > repaid then
        add(a, pad(a.seq), never(change - repaid, change, now))
      end
    end
  end

  lotlib = {pad = pad, parse = parse, flush_head = flush_head, add = add, expire_body = expire_body, expire = expire, spend = spend, adopt = adopt}
  return lotlib
end

-- spend takes amount (> 0) from the lots in burn order (lots() spend,
-- from lot from first when given); a charge the cached head lot covers
-- costs nothing but arithmetic.
local function spend(a, amount, from)
  if not from and a.head and a.head_rem > amount then
    a.head_rem = a.head_rem - amount
    return
  end
  lots().spend(a, amount, from)
end

-- The helpers below serve the less common paths: holds or lots due,
-- closed holds to forget, corrupt data, the sweeper, credits and plan
-- changes. Like the lot helpers they are built on first use (extra), so
-- that a reservation or a settlement with nothing due defines none of
-- them.
local extralib
extra = function()
  if extralib then
    return extralib
  end

  -- first_score returns the smallest score in zset key, or nil if it is empty.
  local function first_score(key)
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return first[2] and tonumber(first[2])
  end

  -- expire_holds closes the holds whose expiry is at or before now and
  -- returns how many it closed and how many ids it looked at. Unless forced
  -- (the sweeper), it asks hold:expiry only when account.expire_at says a
  -- hold may be due. With limit, it handles at most limit ids.
  local function expire_holds(a, now, retention, limit, force)
    if not force and (not a.expire_at or a.expire_at > now) then
      return 0, 0
    end
    local ids
    if limit then
      ids = redis.call('ZRANGEBYSCORE', K_HOLD_EXPIRY, '-inf', int(now), 'LIMIT', 0, limit)
    else
      ids = redis.call('ZRANGEBYSCORE', K_HOLD_EXPIRY, '-inf', int(now))
    end
    local n, lfree = 0, 0
    for _, id in ipairs(ids) do
      local v = redis.call('HGET', K_HOLDS, id)
      local amount, tag
      if v then
        amount, tag = live_amount(v)
      end
      if amount then
        a.reserved = a.reserved - amount
        close_hold(a, id, 'e', now, retention)
        if string.byte(tag, 1) == 76 then -- "L": a lease (lease.lua), not a request's hold
          lfree = lfree + (tonumber(string.match(tag, '^L(%d+)')) or 0)
        else
          n = n + 1
        end
      end
    end
    if lfree > 0 then
      -- An expired lease no longer lends its free part.
      local left = (tonumber(redis.call('HGET', K_ACCOUNT, 'lfree')) or 0) - lfree
      if left > 0 then
        redis.call('HSET', K_ACCOUNT, 'lfree', int(left))
      else
        redis.call('HDEL', K_ACCOUNT, 'lfree')
      end
      a.lfree = nil
    end
    if #ids > 0 then
      -- The ids are the set's lowest scores, so its first #ids ranks.
      redis.call('ZREMRANGEBYRANK', K_HOLD_EXPIRY, 0, #ids - 1)
    end
    a.expire_at = first_score(K_HOLD_EXPIRY)
    return n, #ids
  end

  -- prune forgets at most limit closed holds whose retention ended, and
  -- returns how many it looked at. Unless forced, it asks hold:forget only
  -- when account.forget_at says one may be due.
  local function prune(a, now, limit, force)
    if not force and (not a.forget_at or a.forget_at > now) then
      return 0
    end
    local ids = redis.call('ZRANGEBYSCORE', K_HOLD_FORGET, '-inf', int(now), 'LIMIT', 0, limit)
    if #ids > 0 then
      redis.call('HDEL', K_HOLDS, unpack(ids))
      redis.call('ZREMRANGEBYRANK', K_HOLD_FORGET, 0, #ids - 1)
    end
    a.forget_at = first_score(K_HOLD_FORGET)
    return #ids
  end

  -- corrupt fails the script on stored data it does not understand. The
  -- account is saved first, with the writes W collected: Redis keeps the
  -- writes a failing script already made (expired holds it closed, the
  -- closes a lease sync applied), and the account must still match them.
  local function corrupt(a, msg)
    if W then
      flush_writes()
    end
    save_account(a)
    error('tollgate: ' .. msg)
  end

  -- expire_lots expires the lots whose expiry is at or before now (lots()
  -- expire). Unless forced (the sweeper), it asks lots:expiry only when
  -- account.lot_expire_at says a lot may be due, and otherwise costs
  -- nothing. With limit, it handles at most limit lots.
  local function expire_lots(a, now, limit, force)
    if not force and (not a.lot_expire_at or a.lot_expire_at > now) then
      return 0
    end
    return lots().expire(a, now, limit)
  end

  -- adopt brings the lots in line with a balance that changed without them
  -- (see account.lots above): an account kept before lots is migrated (a
  -- positive balance becomes lot 0, a negative one debt); a drop an older
  -- tollgate made is taken from the lots in burn order, as its charge or
  -- debit would have been; a rise repays debt, and the rest becomes a lot
  -- that never expires, named after the latest entry (an older tollgate
  -- appends one with every change, so no lot has that id yet), of kind
  -- adjust and reference "migration".
  local function adopt(a, now)
    if a.lots == a.balance or (not a.lots and a.seq == 0) then
      return
    end
    lots().adopt(a, now)
  end

  -- plan_changed announces plan.changed for plan version v when events are
  -- on (plan_subscription.lua, plan_override.lua), in the same script as
  -- the change, and returns reply marked as save_account marks it.
  local function plan_changed(v, reply)
    if not EV then
      return reply
    end
    local a = load_account()
    emit(a, 'plan.changed', 0, 0, 0, '{"plan_version":' .. int(v) .. '}')
    return save_account(a, reply)
  end

  -- current_lots loads the account with the lots due by now expired, for a
  -- script that changes the balance but not the holds.
  local function current_lots(now)
    local a = load_account()
    adopt(a, now)
    expire_lots(a, now)
    return a
  end

  extralib = {first_score = first_score, expire_holds = expire_holds, prune = prune, corrupt = corrupt, expire_lots = expire_lots, adopt = adopt, plan_changed = plan_changed, current_lots = current_lots}
  return extralib
end

-- expire_lots_due expires the lots due by t, if any (the check is
-- a.lot_expire_at, so an account with none due needs no lots()).
local function expire_lots_due(a, t)
  if a.lot_expire_at and a.lot_expire_at <= t then
    lots().expire(a, t)
  end
end

-- current loads the account as every read must see it at now: lots in
-- line with the balance (adopt), holds due by now expired (they stop
-- counting at once), lots due by now expired (likewise, with their expire
-- entries), and a batch of closed holds past their retention forgotten.
-- The checks are those of adopt, expire_holds, expire_lots and prune,
-- made here so that an account with nothing due needs no extra().
-- lots_by, when given, expires lots due by it instead of by now: the
-- caller applies charges made earlier than now and expires the rest
-- itself (lease.lua).
local function current(now, retention, lots_by)
  local a = load_account()
  if a.lots ~= a.balance and (a.lots or a.seq ~= 0) then
    extra().adopt(a, now)
  end
  if a.expire_at and a.expire_at <= now then
    extra().expire_holds(a, now, retention)
  end
  expire_lots_due(a, lots_by or now)
  if a.forget_at and a.forget_at <= now then
    extra().prune(a, now, PRUNE_BATCH)
  end
  return a
end
