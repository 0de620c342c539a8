package ledger

import (
	"context"
	_ "embed"
	"fmt"
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
	sweepMatch  = "tollgate:{*}:hold:*" // finds hold:expiry and hold:forget
	sweepBatch  = 500                   // holds per sweep.lua call
	scanBatch   = 1000                  // keys per SCAN call
	attemptSize = 8                     // random bytes in a Reserve attempt token
)

// Positions in customerKeys of the keys Go reads directly.
const (
	keyAccount = 0
	keyEntries = 4
)

// keySuffixes are the names of a customer's keys after the common
// "tollgate:{<customer>}:", in the order lua/lib.lua documents.
var keySuffixes = [...]string{"account", "holds", "hold:expiry", "hold:forget", "entries", "credits", "suspension"}

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

// extend.lua's statuses, as its header lists them.
const (
	extendRenewed  = 0
	extendExpired  = 1
	extendReleased = 2
	extendSettled  = 3
	extendUnknown  = 4
)

// run runs script on keys, batched with the calls of other goroutines
// (see batcher), and returns its array reply.
func (s *RedisStore) run(ctx context.Context, script *redis.Script, keys []string, args ...any) (*reply, error) {
	if err := s.guard(); err != nil {
		return nil, err
	}
	v, err := s.batch.run(ctx, script, keys, args...)
	if err != nil {
		return nil, err
	}
	vals, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: script reply %T, want an array", errCorrupt, v)
	}
	return &reply{vals: vals}, nil
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
