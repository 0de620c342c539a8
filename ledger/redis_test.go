package ledger

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/money"
)

// TestRedisUnavailable stops Redis under a store and checks that every
// call fails with ErrStoreUnavailable, then that the store works again
// once Redis is back, with no reconnect by the caller.
func TestRedisUnavailable(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartOwn(t)
	s := NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: 1, DialerRetries: 1, DialTimeout: time.Second}), Options{})
	t.Cleanup(func() { s.Close() })
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"Ping":    func() error { return s.Ping(ctx) },
		"Reserve": func() error { return s.Reserve(ctx, "down", "h", 1, time.Minute) },
		"Account": func() error { _, err := s.Account(ctx, "down"); return err },
		"Entries": func() error { _, err := s.Entries(ctx, "down", "", 0); return err },
		"GetMeta": func() error { _, _, err := s.GetMeta(ctx, "k"); return err },
		"Sweep":   func() error { _, err := s.Sweep(ctx); return err },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, ErrStoreUnavailable) {
			t.Errorf("%s with Redis stopped: %v; want ErrStoreUnavailable", name, err)
		}
		var op *net.OpError
		if !errors.As(err, &op) {
			t.Errorf("%s: %v does not keep its cause", name, err)
		}
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Credit(ctx, Credit{Customer: "back", Amount: 1, Kind: KindGrant, Key: "k"}); err != nil {
		t.Fatalf("credit after restart: %v", err)
	}
	// A deadline that passes while waiting for Redis is unavailability too.
	short, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	time.Sleep(time.Millisecond)
	if _, err := s.Account(short, "back"); !errors.Is(err, ErrStoreUnavailable) {
		t.Errorf("account with an expired deadline: %v; want ErrStoreUnavailable", err)
	}
}

// TestReserveRetryFindsOwnHold replays the exact script call a client
// resends after a lost reply: it must succeed without a second hold.
func TestReserveRetryFindsOwnHold(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	customer := fmt.Sprintf("retry-%d", time.Now().UnixNano())
	keys := customerKeys(customer)
	t.Cleanup(func() { rdb.Del(context.Background(), keys...) })
	s := NewRedisStore(rdb, Options{})
	if _, err := s.Credit(ctx, Credit{Customer: customer, Amount: 10, Kind: KindGrant, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	args := []any{"h1", int64(4), expiryMilli(now, time.Minute), unixMilli(now), int64(1000), "attempt-1"}
	for i := 0; i < 2; i++ {
		r, err := s.run(ctx, reserveScript, keys, args...)
		if err != nil {
			t.Fatal(err)
		}
		// Both replies report the hold deducted once: 10 - 4.
		if st, avail := r.int(0), r.int(1); r.err != nil || st != 0 || avail != 6 {
			t.Fatalf("call %d: status %d, available %d, %v; want 0, 6", i, st, avail, r.err)
		}
	}
	args[5] = "attempt-2" // another call with the same hold id
	r, err := s.run(ctx, reserveScript, keys, args...)
	if err != nil {
		t.Fatal(err)
	}
	if st := r.int(0); st != 3 {
		t.Fatalf("other attempt: status %d; want 3 (duplicate)", st)
	}
	a, err := s.Account(ctx, customer)
	if err != nil || a.Reserved != 4 {
		t.Fatalf("account = %+v, %v; want 4 reserved once", a, err)
	}
}

// TestSweepForgetsClosedHolds checks the housekeeping Sweep does beyond
// expiring: closed holds past retention leave Redis, in batches.
func TestSweepForgetsClosedHolds(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	customer := fmt.Sprintf("sweep-%d", time.Now().UnixNano())
	keys := customerKeys(customer)
	t.Cleanup(func() { rdb.Del(context.Background(), keys...) })
	now := time.Now()
	s := NewRedisStore(rdb, Options{Now: func() time.Time { return now }, Retention: time.Hour})
	if _, err := s.Credit(ctx, Credit{Customer: customer, Amount: 1 << 40, Kind: KindGrant, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	const holds = 2*sweepBatch + 7
	// Live holds of 1 micro-credit each, written the way reserve.lua
	// writes them.
	pipe := rdb.Pipeline()
	expiry := unixMilli(now) + 1000
	for i := 0; i < holds; i++ {
		id := fmt.Sprintf("h%d", i)
		pipe.HSet(ctx, keys[1], id, "1 x")
		pipe.ZAdd(ctx, keys[2], redis.Z{Score: float64(expiry), Member: id})
	}
	pipe.HSet(ctx, keys[keyAccount], "reserved", holds, "expire_at", expiry)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	n, err := s.Sweep(ctx)
	if err != nil || n != holds {
		t.Fatalf("sweep = %d, %v; want %d", n, err, holds)
	}
	if c := rdb.ZCard(ctx, keys[3]).Val(); c != holds {
		t.Fatalf("%d closed holds; want %d", c, holds)
	}
	now = now.Add(time.Hour)
	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep = %d, %v", n, err)
	}
	for _, k := range keys[1:4] {
		if exists := rdb.Exists(ctx, k).Val(); exists != 0 {
			t.Errorf("%s still exists after retention", k)
		}
	}
	if a, _ := s.Account(ctx, customer); a.Reserved != 0 {
		t.Errorf("reserved = %s; want 0", a.Reserved)
	}
}

// TestCorruptHoldKeepsReservedTrue makes a script fail on a malformed
// closed hold after it has already closed an expired one: the expiry must
// stick with its account update, or reserved would stay high for ever.
func TestCorruptHoldKeepsReservedTrue(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	customer := fmt.Sprintf("corrupt-%d", time.Now().UnixNano())
	keys := customerKeys(customer)
	t.Cleanup(func() { rdb.Del(context.Background(), keys...) })
	now := time.Now()
	s := NewRedisStore(rdb, Options{Now: func() time.Time { return now }})
	if _, err := s.Credit(ctx, Credit{Customer: customer, Amount: 10, Kind: KindGrant, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, customer, "h1", 4, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, keys[1], "bad", "not a hold").Err(); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	_, err := s.Settle(ctx, customer, "bad", 1, Charge{})
	if err == nil || !strings.Contains(err.Error(), "malformed hold bad") {
		t.Fatalf("settle of a malformed hold: %v; want the script's error", err)
	}
	if r := rdb.HGet(ctx, keys[keyAccount], "reserved").Val(); r != "0" {
		t.Errorf("account.reserved = %q after the script closed the expired hold and failed; want 0", r)
	}
	if v := rdb.HGet(ctx, keys[1], "h1").Val(); !strings.HasPrefix(v, "e ") {
		t.Errorf("h1 = %q; want closed as expired", v)
	}
}

// TestScriptReplyDecoding feeds the decoder replies a broken or foreign
// script could produce: each must be an error, never a panic.
func TestScriptReplyDecoding(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s := NewRedisStore(srv.Client(t), Options{})
	for _, src := range []string{"return 1", "return 'x'", "return {}", "return {'a', 1}", "return {1}"} {
		r, err := s.run(ctx, redis.NewScript(src), []string{"tollgate:{decode}:x"})
		if err == nil {
			r.int(0)
			r.int(1)
			r.str(2)
			err = r.err
		}
		if !errors.Is(err, errCorrupt) {
			t.Errorf("%s: %v; want errCorrupt", src, err)
		}
	}
}

// redisReply is an error reply as go-redis returns it (a redis.Error).
type redisReply string

func (e redisReply) Error() string { return string(e) }
func (redisReply) RedisError()     {}

func TestUnavailableClassification(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{redis.ErrClosed, true},
		{redis.ErrPoolTimeout, true},
		{context.DeadlineExceeded, true},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{fmt.Errorf("wrapped: %w", redisReply("LOADING Redis is loading the dataset in memory")), true},
		{redisReply("CLUSTERDOWN The cluster is down"), true},
		{redisReply("TRYAGAIN Multiple keys request during rehashing of slot"), true},
		{redisReply("READONLY You can't write against a read only replica."), true},
		{redisReply("ERR max number of clients reached"), true},
		{redisReply("OOM command not allowed when used memory > 'maxmemory'."), true},
		{redisReply("ERR Error running script: boom"), false},
		{redisReply("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		{context.Canceled, false},
		{errCorrupt, false},
	}
	for _, tc := range tests {
		if got := unavailable(tc.err); got != tc.want {
			t.Errorf("unavailable(%v) = %v; want %v", tc.err, got, tc.want)
		}
	}
}

func TestCustomerKeys(t *testing.T) {
	want := []string{
		"tollgate:{cus:1/x}:account",
		"tollgate:{cus:1/x}:holds",
		"tollgate:{cus:1/x}:hold:expiry",
		"tollgate:{cus:1/x}:hold:forget",
		"tollgate:{cus:1/x}:entries",
		"tollgate:{cus:1/x}:credits",
		"tollgate:{cus:1/x}:suspension",
		"tollgate:{cus:1/x}:lots",
		"tollgate:{cus:1/x}:lots:burn",
		"tollgate:{cus:1/x}:lots:expiry",
	}
	if got := customerKeys("cus:1/x"); !slices.Equal(got, want) {
		t.Errorf("customerKeys = %q; want %q", got, want)
	}
}

func TestCustomerOfKey(t *testing.T) {
	for _, k := range customerKeys("cus:1/x") {
		if c, ok := customerOfKey(k); !ok || c != "cus:1/x" {
			t.Errorf("customerOfKey(%q) = %q, %v", k, c, ok)
		}
	}
	for _, k := range []string{"tollgate:meta:x", "other:{a}:hold:expiry", "tollgate:{}:hold:expiry", "tollgate:{a b}:x", "tollgate:{abc"} {
		if c, ok := customerOfKey(k); ok {
			t.Errorf("customerOfKey(%q) = %q; want no customer", k, c)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add("12 12 {\"kind\":\"grant\",\"at\":\"2026-01-02T03:04:05Z\"}")
	f.Add("-1 -1 {}")
	f.Add("1 2")
	f.Add("x y z")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		// Whatever the stored text, decoding returns an error or an
		// entry of the customer and id asked for; it never panics.
		e, err := decodeEntry("c", 7, raw)
		if err == nil && (e.Customer != "c" || e.ID != "7") {
			t.Fatalf("decoded %+v", e)
		}
		if err != nil && !errors.Is(err, errCorrupt) {
			t.Fatalf("error %v does not match errCorrupt", err)
		}
	})
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add("c", encodeCursor("c", 17))
	f.Add("c", "")
	f.Add("c", "MTc6Yw")
	f.Add("c", "!!")
	f.Fuzz(func(t *testing.T, customer, cursor string) {
		seq, err := decodeCursor(customer, cursor)
		if err != nil {
			if !errors.Is(err, ErrInvalidCursor) {
				t.Fatalf("error %v does not match ErrInvalidCursor", err)
			}
			return
		}
		if cursor != "" && (seq < 1 || encodeCursor(customer, seq) != cursor) {
			t.Fatalf("cursor %q decoded to %d, which encodes differently", cursor, seq)
		}
	})
}

// TestDecodeCursorCanonical checks that a cursor decodes only in the
// exact form encodeCursor writes: base64 has other spellings of the same
// bytes (nonzero padding bits in the last character, line breaks the
// decoder skips), and two strings naming one page would make a cursor
// something other than an opaque token.
func TestDecodeCursorCanonical(t *testing.T) {
	good := encodeCursor("c", 17) // "MTc6Yw"
	if seq, err := decodeCursor("c", good); err != nil || seq != 17 {
		t.Fatalf("decodeCursor(%q) = %d, %v; want 17", good, seq, err)
	}
	for _, bad := range []struct{ customer, cursor string }{
		{"c", "MTc6Yx"},     // the same bytes, with padding bits set
		{"c", "MTc6\nYw"},   // a line break, which base64 decoding skips
		{"c", "MTc6Yw\r\n"}, // trailing CR LF
		{"c", "MTc6Yw=="},   // padded
		{"\xf5", "MzA69X"},  // found by FuzzDecodeCursor
	} {
		if seq, err := decodeCursor(bad.customer, bad.cursor); !errors.Is(err, ErrInvalidCursor) {
			t.Errorf("decodeCursor(%q, %q) = %d, %v; want ErrInvalidCursor", bad.customer, bad.cursor, seq, err)
		}
	}
}

func TestDecideCredit(t *testing.T) {
	m := money.Micros(1)
	once := func(total money.Micros, kind Kind) *creditRecord {
		return &creditRecord{total: total, kind: kind, seq: 1}
	}
	cum := func(total money.Micros) *creditRecord {
		return &creditRecord{cumulative: true, total: total, kind: KindRefund, seq: 1}
	}
	tests := []struct {
		name  string
		rec   *creditRecord
		c     Credit
		want  creditDecision
		delta money.Micros
	}{
		{"new key", nil, Credit{Amount: 5 * m, Kind: KindTopup}, creditApply, 5 * m},
		{"replay", once(5*m, KindTopup), Credit{Amount: 5 * m, Kind: KindTopup}, creditReplay, 0},
		{"other amount", once(5*m, KindTopup), Credit{Amount: 6 * m, Kind: KindTopup}, creditConflict, 0},
		{"other kind", once(5*m, KindTopup), Credit{Amount: 5 * m, Kind: KindGrant}, creditConflict, 0},
		{"cumulative grows", cum(-30 * m), Credit{Amount: -100 * m, Kind: KindRefund, Cumulative: true}, creditApply, -70 * m},
		{"cumulative late", cum(-100 * m), Credit{Amount: -30 * m, Kind: KindRefund, Cumulative: true}, creditReplay, 0},
		{"cumulative same", cum(-100 * m), Credit{Amount: -100 * m, Kind: KindRefund, Cumulative: true}, creditReplay, 0},
		{"cumulative sign flip", cum(-100 * m), Credit{Amount: 100 * m, Kind: KindRefund, Cumulative: true}, creditConflict, 0},
		{"mode change", cum(-100 * m), Credit{Amount: -100 * m, Kind: KindRefund}, creditConflict, 0},
	}
	for _, tc := range tests {
		got, delta := decideCredit(tc.rec, tc.c)
		if got != tc.want || delta != tc.delta {
			t.Errorf("%s: %v %s; want %v %s", tc.name, got, delta, tc.want, tc.delta)
		}
	}
}

// TestKeySlot checks the cluster slot function against the examples of
// the Redis Cluster specification and CLUSTER KEYSLOT's documentation.
func TestKeySlot(t *testing.T) {
	for key, want := range map[string]uint16{
		"123456789": 0x31c3 % 16384, // the CRC16 check value of the specification
		"somekey":   11058,
		"hash_tag":  2515, // CLUSTER KEYSLOT foo{hash_tag}
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	tags := slotTags(markerChunks)
	for i, tag := range tags {
		if got := int(keySlot(tag)) / (clusterSlots / markerChunks); got != i {
			t.Errorf("tag %d (%s) hashes to range %d", i, tag, got)
		}
	}
}
