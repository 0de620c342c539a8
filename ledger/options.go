package ledger

import (
	"os"
	"time"

	"go.uber.org/zap"
)

// DefaultRetention is how long a store remembers closed holds when
// Options.Retention is zero: 35 days, because Stripe retries a webhook for
// up to 3 days and its events API reaches 30 days back, and a replayed
// Settle or Release must still find its hold's fate.
const DefaultRetention = 35 * 24 * time.Hour

// DefaultLockTimeout is how long OpenBolt waits for another process to let
// go of the store file when Options.LockTimeout is zero.
const DefaultLockTimeout = time.Second

// Options configures RedisStore and BoltStore. The zero value is ready to
// use.
type Options struct {
	// Now is the clock for hold expiry, entry timestamps, retention and
	// lock expiry. Nil means time.Now. Tests pass a fake clock and advance
	// it instead of sleeping.
	Now func() time.Time

	// Logger receives operational messages (how many expired holds a
	// Sweep found). Nil means no logging. The stores never log per request.
	Logger *zap.Logger

	// Retention is how long a closed hold (settled, released or expired)
	// is remembered so that Settle and Release stay idempotent; after it,
	// the hold id reads as unknown and may be reused. Zero means
	// DefaultRetention; negative is treated as zero. Credit idempotency
	// keys are not affected: they are kept forever. BoltStore keeps
	// settled holds in its file and released or expired ones in memory,
	// so a restart forgets the latter (as it releases live holds); it
	// remembers a released hold for max(its ttl, 5 min) only, and caps the
	// number it remembers (boltholds.go).
	Retention time.Duration

	// LockTimeout is how long OpenBolt waits for the file lock held by
	// another process before failing with ErrStoreLocked. Zero means
	// DefaultLockTimeout. RedisStore ignores it.
	LockTimeout time.Duration

	// Events turns outbound events on (outbox.go): every change that
	// causes one writes it atomically, and the store becomes an Outbox.
	// Nil means off, and the stores write and send nothing more than
	// without it.
	Events *EventOptions
	// JournalMaxRecords is how many records the journal (see Journal)
	// keeps at most; the oldest go first. Zero means
	// DefaultJournalMaxRecords; negative is treated as zero.
	JournalMaxRecords int

	// openFile, when set, opens BoltStore's file instead of os.OpenFile:
	// tests make the store's writes fail with it.
	openFile func(name string, flag int, perm os.FileMode) (*os.File, error)
	// maxClosedHolds, when set, replaces defaultMaxClosedHolds, the cap on
	// the closed holds BoltStore remembers in memory (boltholds.go).
	maxClosedHolds int
	// releasedKeep, when set, replaces releasedKeep, the least time
	// BoltStore remembers a released hold (the differential test
	// compares it with Redis, which remembers it for Retention).
	releasedKeep time.Duration
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.JournalMaxRecords <= 0 {
		o.JournalMaxRecords = DefaultJournalMaxRecords
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	return o
}

// unixMilli returns t as whole milliseconds since the Unix epoch, rounded
// down. Both stores keep time in these units so that they agree to the
// millisecond on whether a hold has expired.
func unixMilli(t time.Time) int64 { return t.UnixMilli() }

// expiryMilli returns the millisecond at which a hold reserved at now for
// ttl expires, rounded up so that a hold never expires before its ttl.
func expiryMilli(now time.Time, ttl time.Duration) int64 {
	ns := now.UnixNano() + int64(ttl)
	ms := ns / int64(time.Millisecond)
	if ns%int64(time.Millisecond) > 0 {
		ms++
	}
	return ms
}
