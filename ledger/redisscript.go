package ledger

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Each operation is one Lua script in lua/<op>.lua. The ledger scripts
// share lua/lib.lua (key layout and helpers), prepended when the script is
// built; the scripts are immutable and safe to share between stores.
var (
	//go:embed lua/lib.lua
	libLua string
	//go:embed lua/reserve.lua
	reserveLua string
	//go:embed lua/settle.lua
	settleLua string
	//go:embed lua/release.lua
	releaseLua string
	//go:embed lua/extend.lua
	extendLua string
	//go:embed lua/credit.lua
	creditLua string
	//go:embed lua/account.lua
	accountLua string
	//go:embed lua/lots.lua
	lotsLua string
	//go:embed lua/suspend.lua
	suspendLua string
	//go:embed lua/lift.lua
	liftLua string
	//go:embed lua/sweep.lua
	sweepLua string
	//go:embed lua/trylock.lua
	trylockLua string
	//go:embed lua/unlock.lua
	unlockLua string
	//go:embed lua/putmetaifabsent.lua
	putMetaIfAbsentLua string

	reserveScript = redis.NewScript(libLua + reserveLua)
	settleScript  = redis.NewScript(libLua + settleLua)
	releaseScript = redis.NewScript(libLua + releaseLua)
	extendScript  = redis.NewScript(libLua + extendLua)
	creditScript  = redis.NewScript(libLua + creditLua)
	accountScript = redis.NewScript(libLua + accountLua)
	lotsScript    = redis.NewScript(libLua + lotsLua)
	suspendScript = redis.NewScript(libLua + suspendLua)
	liftScript    = redis.NewScript(libLua + liftLua)
	sweepScript   = redis.NewScript(libLua + sweepLua)
	trylockScript = redis.NewScript(trylockLua)
	unlockScript  = redis.NewScript(unlockLua)

	putMetaIfAbsentScript = redis.NewScript(putMetaIfAbsentLua)
)

// Key names. Everything of one customer shares the hash tag {customer},
// so that each script touches a single Redis Cluster slot; lua/lib.lua
// documents what each key holds.
const (
	keyPrefix   = "tollgate:"
	metaPrefix  = "tollgate:meta:"
	lockPrefix  = "tollgate:lock:"
	sweepMatch  = "tollgate:{*}:*:[ef]*" // with TYPE zset: hold:expiry, hold:forget and lots:expiry (not lots:burn)
	sweepBatch  = 500                    // holds and lots per sweep.lua call
	scanBatch   = 1000                   // keys per SCAN call
	attemptSize = 8                      // random bytes in a Reserve attempt token
)

// Positions in customerKeys of the keys Go reads directly.
const (
	keyAccount = 0
	keyEntries = 4
)

// keySuffixes are the names of a customer's keys after the common
// "tollgate:{<customer>}:", in the order lua/lib.lua documents.
var keySuffixes = [...]string{"account", "holds", "hold:expiry", "hold:forget", "entries", "credits", "suspension", "lots", "lots:burn", "lots:expiry"}

// customerKeys returns the KEYS of every ledger script, in the order
// lua/lib.lua documents. The names share one backing string: every script
// call builds them, and so they cost two allocations instead of eight.
func customerKeys(customer string) []string {
	prefix := len(keyPrefix) + len(customer) + 3 // tollgate:{customer}:
	size := 0
	for _, sfx := range keySuffixes {
		size += prefix + len(sfx)
	}
	var b strings.Builder
	b.Grow(size)
	for _, sfx := range keySuffixes {
		b.WriteString(keyPrefix)
		b.WriteByte('{')
		b.WriteString(customer)
		b.WriteString("}:")
		b.WriteString(sfx)
	}
	all := b.String()
	keys := make([]string, len(keySuffixes))
	off := 0
	for i, sfx := range keySuffixes {
		n := prefix + len(sfx)
		keys[i] = all[off : off+n]
		off += n
	}
	return keys
}

// customerOfKey returns the customer whose hash tag a key carries.
func customerOfKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, keyPrefix+"{")
	if !ok {
		return "", false
	}
	customer, _, ok := strings.Cut(rest, "}")
	if !ok || ValidateCustomer(customer) != nil {
		return "", false
	}
	return customer, true
}

// The statuses below are the first field of a script's reply, one type per
// script. Each constant's comment is the line of the script's Returns
// header it names, so that the switch in Go reads like the header in Lua.
// Of release.lua's statuses only releaseRecorded is named: Release answers
// nil whichever it gets, and LeaseStore needs to know that one.

// releaseRecorded is release.lua's {3}: unknown, now recorded as released.
const releaseRecorded = 3

// reserveStatus is the status in reserve.lua's reply {status, available[, reserved]}.
type reserveStatus int64

const (
	// reserveOK is {0, available after}: reserved (or this very call was
	// already applied; or, for amount 0 and a customer without entries,
	// allowed without storing a hold).
	reserveOK reserveStatus = 0
	// reserveInsufficient is {1, available, reserved}: insufficient
	// credits; available + reserved is the balance.
	reserveInsufficient reserveStatus = 1
	// reserveSuspended is {2, 0}: customer suspended.
	reserveSuspended reserveStatus = 2
	// reserveDuplicate is {3, 0}: hold id already used (live or closed
	// within retention).
	reserveDuplicate reserveStatus = 3
)

// settleStatus is the status in settle.lua's reply {status, seq, ...}.
type settleStatus int64

const (
	// settleCharged is {0, seq, balance}: charged now by entry seq,
	// leaving balance (the caller knows the rest of the entry: it sent
	// the body).
	settleCharged settleStatus = 0
	// settleReplayed is {1, seq, entry}: already settled by entry seq,
	// whose stored text is entry; nothing changed.
	settleReplayed settleStatus = 1
	// settleReleased is {2, 0, ''}: the hold was released.
	settleReleased settleStatus = 2
	// settleUnknown is {3, 0, ''}: no such hold (never reserved, or
	// forgotten).
	settleUnknown settleStatus = 3
	// settleBelowFloor is {4, 0, ''}: the charge would take the balance
	// below -(2^53-1).
	settleBelowFloor settleStatus = 4
	// settleUnrecorded is {5, 0, balance}: no such hold and actual is 0:
	// the settlement of a free hold reserve.lua did not store; nothing
	// was written.
	settleUnrecorded settleStatus = 5
)

// extendStatus is the status in extend.lua's reply {status}.
type extendStatus int64

const (
	// extendRenewed is {0}: the hold is live and expires no earlier than
	// asked.
	extendRenewed extendStatus = 0
	// extendExpired is {1}: the hold had expired.
	extendExpired extendStatus = 1
	// extendReleased is {2}: the hold was released.
	extendReleased extendStatus = 2
	// extendSettled is {3}: the hold was settled.
	extendSettled extendStatus = 3
	// extendUnknown is {4}: no such hold (never reserved, or forgotten).
	extendUnknown extendStatus = 4
)

// lotIDWidth is the number of digits of a lot id in the Redis lot keys
// (pad in lua/lib.lua): enough for every entry seq up to 2^53.
const lotIDWidth = 16

// padLot returns lot id n as the Redis lot keys name it.
func padLot(n int64) string {
	s := strconv.FormatInt(n, 10)
	if len(s) >= lotIDWidth {
		return s
	}
	return strings.Repeat("0", lotIDWidth-len(s)) + s
}

// creditStatus is the status in credit.lua's reply {status, seq, ...}.
type creditStatus int64

const (
	// creditApplied is {0, seq, balance, delta}: applied as entry seq,
	// which added delta (for a cumulative key, the part not applied
	// before) and left balance.
	creditApplied creditStatus = 0
	// creditReplayed is {1, seq, entry}: already applied; entry seq is
	// the key's latest entry.
	creditReplayed creditStatus = 1
	// creditConflicted is {2, 0, ''}: the key was used with another
	// amount, sign, kind or mode.
	creditConflicted creditStatus = 2
	// creditOutOfRange is {3, 0, ''}: the balance would leave
	// +-(2^53-1).
	creditOutOfRange creditStatus = 3
)

// run runs script on keys, batched with the calls of other goroutines
// (see batcher), and returns its array reply.
func (s *RedisStore) run(ctx context.Context, script *redis.Script, keys []string, args ...any) (*reply, error) {
	if err := s.guard(); err != nil {
		return nil, err
	}
	keys, args = s.withEvents(keys, args)
	v, err := s.batch.run(ctx, script, keys, args...)
	if err != nil {
		return nil, err
	}
	vals, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: script reply %T, want an array", errCorrupt, v)
	}
	return &reply{vals: s.eventsWritten(ctx, keys, vals)}, nil
}

// reply decodes a script's array reply field by field. The first problem
// (a missing field, a wrong type) is kept in err and later reads return
// zero values, so callers check err once after reading every field.
type reply struct {
	vals []any
	err  error
}

func (r *reply) at(i int) any {
	if r.err != nil {
		return nil
	}
	if i >= len(r.vals) {
		r.err = fmt.Errorf("%w: script reply has %d fields, want more than %d", errCorrupt, len(r.vals), i)
		return nil
	}
	return r.vals[i]
}

func (r *reply) int(i int) int64 {
	switch v := r.at(i).(type) {
	case int64:
		return v
	case nil:
	default:
		r.err = fmt.Errorf("%w: script reply field %d is %T, want an integer", errCorrupt, i, v)
	}
	return 0
}

func (r *reply) str(i int) string {
	switch v := r.at(i).(type) {
	case string:
		return v
	case nil:
	default:
		r.err = fmt.Errorf("%w: script reply field %d is %T, want a string", errCorrupt, i, v)
	}
	return ""
}
