-- lib.lua is prepended to every ledger script (not to trylock.lua and
-- unlock.lua), so that the scripts share one key layout and one set of
-- helpers. It defines locals only and returns nothing.
--
-- Every ledger script receives the same eight KEYS, all of one customer,
-- all sharing the {customer} hash tag so that a script touches one Redis
-- Cluster slot. Scripts never build key names.
--
-- KEYS[1] -> tollgate:{<customer>}:account      hash: balance, reserved, seq, suspended
-- KEYS[2] -> tollgate:{<customer>}:hold:amount  hash: hold id -> "<amount> <attempt>"
-- KEYS[3] -> tollgate:{<customer>}:hold:expiry  zset: live hold ids, score = expiry (unix ms)
-- KEYS[4] -> tollgate:{<customer>}:hold:closed  hash: hold id -> "<state> <forget_at_ms>[ <seq>]",
--                                                state e(xpired) | r(eleased) | s(ettled, by entry seq)
-- KEYS[5] -> tollgate:{<customer>}:hold:forget  zset: closed hold ids, score = forget-at (unix ms)
-- KEYS[6] -> tollgate:{<customer>}:entries      hash: seq -> "<amount> <balance_after> <json>"
-- KEYS[7] -> tollgate:{<customer>}:credits      hash: idempotency key -> "<o|c> <total> <seq> <kind>"
-- KEYS[8] -> tollgate:{<customer>}:suspension   hash: reason -> "suspended" | "lifted"
--
-- account.reserved is the sum of the amounts in hold:amount. An expired hold
-- stays there until some script (or the sweeper) moves it to hold:closed, so
-- every script that reads reserved first calls expire_holds.
--
-- Numbers: Lua numbers are doubles, exact up to 2^53. The Go side keeps every
-- amount and balance within +-(2^53-1), and every number handed to
-- redis.call is formatted with int() so that Redis never sees "1e+15".

local K_ACCOUNT = KEYS[1]
local K_HOLD_AMOUNT = KEYS[2]
local K_HOLD_EXPIRY = KEYS[3]
local K_HOLD_CLOSED = KEYS[4]
local K_HOLD_FORGET = KEYS[5]
local K_ENTRIES = KEYS[6]
local K_CREDITS = KEYS[7]
local K_SUSPENSION = KEYS[8]

local MAX_AMOUNT = 9007199254740991 -- 2^53-1, ledger.MaxAmount
local PRUNE_BATCH = 16 -- closed holds forgotten per script, beyond Sweep

local function int(n)
  return string.format('%d', n)
end

local function num(v)
  return tonumber(v or '0') or 0
end

-- hold_amount parses a hold:amount value into amount and attempt token.
local function parse_hold(v)
  local amount, attempt = string.match(v, '^(%-?%d+) (%S+)$')
  return tonumber(amount) or 0, attempt
end

-- close_hold records hold id as closed in state ('e', 'r' or 's' with the
-- settling entry's seq) until now + retention.
local function close_hold(id, state, now, retention, seq)
  local forget_at = int(now + retention)
  local v = state .. ' ' .. forget_at
  if seq then
    v = v .. ' ' .. int(seq)
  end
  redis.call('HSET', K_HOLD_CLOSED, id, v)
  redis.call('ZADD', K_HOLD_FORGET, forget_at, id)
end

-- drop_hold removes live hold id (whose hold:amount value is v) and returns
-- its amount to available.
local function drop_hold(id, v)
  local amount = parse_hold(v)
  redis.call('HDEL', K_HOLD_AMOUNT, id)
  redis.call('ZREM', K_HOLD_EXPIRY, id)
  redis.call('HINCRBY', K_ACCOUNT, 'reserved', int(-amount))
end

-- expire_holds closes every hold whose expiry is at or before now (at most
-- limit of them when limit is given) and returns how many it closed.
local function expire_holds(now, retention, limit)
  local ids
  if limit then
    ids = redis.call('ZRANGEBYSCORE', K_HOLD_EXPIRY, '-inf', int(now), 'LIMIT', 0, limit)
  else
    ids = redis.call('ZRANGEBYSCORE', K_HOLD_EXPIRY, '-inf', int(now))
  end
  local n = 0
  for _, id in ipairs(ids) do
    local v = redis.call('HGET', K_HOLD_AMOUNT, id)
    if v then
      drop_hold(id, v)
      close_hold(id, 'e', now, retention)
      n = n + 1
    else
      redis.call('ZREM', K_HOLD_EXPIRY, id)
    end
  end
  return n, #ids
end

-- prune forgets at most limit closed holds whose retention ended, and
-- returns how many it looked at.
local function prune(now, limit)
  local ids = redis.call('ZRANGEBYSCORE', K_HOLD_FORGET, '-inf', int(now), 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    redis.call('HDEL', K_HOLD_CLOSED, id)
    redis.call('ZREM', K_HOLD_FORGET, id)
  end
  return #ids
end

-- closed_state returns the state and entry seq of closed hold id, or nil
-- when the hold is unknown or its retention ended (it is then forgotten at
-- once, whether or not prune got to it, so that both stores agree).
local function closed_state(id, now)
  local v = redis.call('HGET', K_HOLD_CLOSED, id)
  if not v then
    return nil
  end
  local state, forget_at, seq = string.match(v, '^(%a) (%-?%d+) ?(%d*)$')
  if not state then
    error('tollgate: malformed closed hold ' .. id)
  end
  if tonumber(forget_at) <= now then
    redis.call('HDEL', K_HOLD_CLOSED, id)
    redis.call('ZREM', K_HOLD_FORGET, id)
    return nil
  end
  return state, seq
end

-- append_entry adds amount to the balance, stores the entry with the new
-- balance, and returns the entry's seq and stored text.
local function append_entry(amount, body)
  local seq = redis.call('HINCRBY', K_ACCOUNT, 'seq', 1)
  local balance = redis.call('HINCRBY', K_ACCOUNT, 'balance', int(amount))
  local raw = int(amount) .. ' ' .. int(balance) .. ' ' .. body
  redis.call('HSET', K_ENTRIES, int(seq), raw)
  return seq, raw
end

local function balance()
  return num(redis.call('HGET', K_ACCOUNT, 'balance'))
end

local function in_range(n)
  return n >= -MAX_AMOUNT and n <= MAX_AMOUNT
end
