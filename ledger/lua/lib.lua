-- lib.lua is prepended to every ledger script (not to trylock.lua and
-- unlock.lua), so that the scripts share one key layout and one set of
-- helpers. It defines locals only and returns nothing.
--
-- Every ledger script receives the same seven KEYS, all of one customer,
-- all sharing the {customer} hash tag so that a script touches one Redis
-- Cluster slot. Scripts never build key names.
--
-- KEYS[1] -> tollgate:{<customer>}:account      hash: balance, reserved, seq, suspended,
--                                                expire_at, forget_at (below)
-- KEYS[2] -> tollgate:{<customer>}:holds        hash: hold id -> live "<amount> <attempt>", or
--                                                closed "<state> <forget_at_ms>[ <seq>]",
--                                                state e(xpired) | r(eleased) | s(ettled, by entry seq)
-- KEYS[3] -> tollgate:{<customer>}:hold:expiry  zset: live hold ids, score = expiry (unix ms)
-- KEYS[4] -> tollgate:{<customer>}:hold:forget  zset: closed hold ids, score = forget-at (unix ms)
-- KEYS[5] -> tollgate:{<customer>}:entries      hash: seq -> "<amount> <balance_after> <json>"
-- KEYS[6] -> tollgate:{<customer>}:credits      hash: idempotency key -> "<o|c> <total> <seq> <kind>"
-- KEYS[7] -> tollgate:{<customer>}:suspension   hash: reason -> "suspended" | "lifted"
--
-- account.reserved is the sum of the amounts of the live holds. An expired
-- hold stays live until some script (or the sweeper) closes it, so every
-- script that reads reserved or a hold's state first calls expire_holds.
--
-- account.expire_at is at most the smallest score in hold:expiry, and is
-- absent only when hold:expiry is empty; account.forget_at is the same for
-- hold:forget. They let a script see from the account alone, which it reads
-- anyway, that no hold can have expired and no closed hold is due to be
-- forgotten, instead of asking both sorted sets on every call. A script
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

local MAX_AMOUNT = 9007199254740991 -- 2^53-1, ledger.MaxAmount
local PRUNE_BATCH = 16 -- closed holds forgotten per script, beyond Sweep

local function int(n)
  return string.format('%d', n)
end

local function in_range(n)
  return n >= -MAX_AMOUNT and n <= MAX_AMOUNT
end

-- load_account reads the account into a table: balance, reserved, seq and
-- suspended as numbers (0 when absent), expire_at and forget_at as numbers
-- or nil. It keeps the values read, so that save_account writes back only
-- what changed.
local function load_account()
  local v = redis.call('HMGET', K_ACCOUNT, 'balance', 'reserved', 'seq', 'expire_at', 'forget_at', 'suspended')
  local a = {
    balance = tonumber(v[1]) or 0,
    reserved = tonumber(v[2]) or 0,
    seq = tonumber(v[3]) or 0,
    expire_at = v[4] and tonumber(v[4]),
    forget_at = v[5] and tonumber(v[5]),
    suspended = tonumber(v[6]) or 0,
  }
  a.balance0, a.reserved0, a.seq0, a.expire_at0, a.forget_at0 = a.balance, a.reserved, a.seq, a.expire_at, a.forget_at
  return a
end

-- save_account writes the fields of a that changed since load_account in
-- one HSET (suspended is only ever changed by suspend.lua and lift.lua,
-- with HINCRBY), and deletes a bound whose set became empty. It returns
-- reply, so that a script can end with "return save_account(a, reply)".
local function save_account(a, reply)
  local set = {}
  if a.balance ~= a.balance0 then
    set[#set + 1] = 'balance'
    set[#set + 1] = int(a.balance)
  end
  if a.reserved ~= a.reserved0 then
    set[#set + 1] = 'reserved'
    set[#set + 1] = int(a.reserved)
  end
  if a.seq ~= a.seq0 then
    set[#set + 1] = 'seq'
    set[#set + 1] = int(a.seq)
  end
  if a.expire_at ~= a.expire_at0 and a.expire_at then
    set[#set + 1] = 'expire_at'
    set[#set + 1] = int(a.expire_at)
  end
  if a.forget_at ~= a.forget_at0 and a.forget_at then
    set[#set + 1] = 'forget_at'
    set[#set + 1] = int(a.forget_at)
  end
  if #set > 0 then
    redis.call('HSET', K_ACCOUNT, unpack(set))
  end
  if a.expire_at0 and not a.expire_at then
    redis.call('HDEL', K_ACCOUNT, 'expire_at')
  end
  if a.forget_at0 and not a.forget_at then
    redis.call('HDEL', K_ACCOUNT, 'forget_at')
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

-- first_score returns the smallest score in zset key, or nil if it is empty.
local function first_score(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2])
end

-- close_hold records hold id as closed in state ('e', 'r' or 's' with the
-- settling entry's seq) until now + retention.
local function close_hold(a, id, state, now, retention, seq)
  local forget_at = now + retention
  local v = state .. ' ' .. int(forget_at)
  if seq then
    v = v .. ' ' .. int(seq)
  end
  redis.call('HSET', K_HOLDS, id, v)
  redis.call('ZADD', K_HOLD_FORGET, int(forget_at), id)
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
  local n = 0
  for _, id in ipairs(ids) do
    local v = redis.call('HGET', K_HOLDS, id)
    local amount = v and live_amount(v)
    if amount then
      a.reserved = a.reserved - amount
      close_hold(a, id, 'e', now, retention)
      n = n + 1
    end
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
-- account is saved first: Redis keeps the writes a failing script already
-- made (expired holds it closed), and reserved must still match them.
local function corrupt(a, msg)
  save_account(a)
  error('tollgate: ' .. msg)
end

-- closed_state returns the state and entry seq of closed hold id, whose
-- holds value is v, or nil when its retention ended (it is then forgotten
-- at once, whether or not prune got to it, so that both stores agree).
local function closed_state(a, id, v, now)
  local state, forget_at, seq = string.match(v, '^(%a) (%-?%d+) ?(%d*)$')
  if not state then
    corrupt(a, 'malformed hold ' .. id)
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
  redis.call('HSET', K_ENTRIES, int(a.seq), int(amount) .. ' ' .. int(a.balance) .. ' ' .. body)
  return a.seq
end

-- current loads the account as every read must see it at now: holds due
-- by now expired (they stop counting at once), and a batch of closed
-- holds past their retention forgotten.
local function current(now, retention)
  local a = load_account()
  expire_holds(a, now, retention)
  prune(a, now, PRUNE_BATCH)
  return a
end
