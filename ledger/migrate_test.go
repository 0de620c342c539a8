package ledger_test

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// writePreLotsBolt writes a store file as tollgate wrote it before lots:
// alice with a positive balance and a live hold, bob below zero, carol
// suspended without entries.
func writePreLotsBolt(t *testing.T, path string, now time.Time) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	state := func(balance, seq, suspended int64) []byte {
		v := make([]byte, 24)
		binary.BigEndian.PutUint64(v[0:], uint64(balance))
		binary.BigEndian.PutUint64(v[8:], uint64(seq))
		binary.BigEndian.PutUint64(v[16:], uint64(suspended))
		return v
	}
	seq := func(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
	at := now.UTC().Format(time.RFC3339Nano)
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range []string{"customers", "expiry", "forget", "meta", "locks"} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		root := tx.Bucket([]byte("customers"))
		customer := func(id string, st []byte, entries ...string) *bbolt.Bucket {
			b, err := root.CreateBucket([]byte(id))
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"holds", "closed", "entries", "credits", "suspension"} {
				if _, err := b.CreateBucket([]byte(name)); err != nil {
					t.Fatal(err)
				}
			}
			for i, e := range entries {
				if err := b.Bucket([]byte("entries")).Put(seq(uint64(i+1)), []byte(e)); err != nil {
					t.Fatal(err)
				}
			}
			if st != nil {
				if err := b.Put([]byte("state"), st); err != nil {
					t.Fatal(err)
				}
			}
			return b
		}
		alice := customer("alice", state(700_000_000, 2, 0),
			`1000000000 1000000000 {"kind":"topup","reference":"cs_1","at":"`+at+`"}`,
			`-300000000 700000000 {"kind":"charge","reference":"r1","at":"`+at+`"}`)
		hold := make([]byte, 16)
		binary.BigEndian.PutUint64(hold[0:], 5_000_000)
		binary.BigEndian.PutUint64(hold[8:], uint64(now.Add(time.Hour).UnixMilli()))
		if err := alice.Bucket([]byte("holds")).Put([]byte("h1"), hold); err != nil {
			return err
		}
		idx := binary.BigEndian.AppendUint64(nil, uint64(now.Add(time.Hour).UnixMilli())^(1<<63))
		idx = append(append(append(idx, "alice"...), 0), "h1"...)
		if err := tx.Bucket([]byte("expiry")).Put(idx, nil); err != nil {
			return err
		}
		customer("bob", state(-50_000_000, 1, 0), `-50000000 -50000000 {"kind":"adjust","at":"`+at+`"}`)
		carol := customer("carol", state(0, 0, 1))
		return carol.Bucket([]byte("suspension")).Put([]byte("dp_1"), []byte("suspended"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBoltMigratesPreLotsFile opens a file written before lots: a
// positive balance becomes lot 0, a negative one debt, once, and the store
// serves the file as if it had always kept lots.
func TestBoltMigratesPreLotsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	clock := newFakeClock()
	writePreLotsBolt(t, path, clock.Now())
	opts := ledger.Options{Now: clock.Now}
	migratedAt := clock.Now()
	for open := range 2 { // the second open finds the file migrated
		s, err := ledger.OpenBolt(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"alice", "bob", "carol"} {
			checkInvariants(t, s, c)
		}
		// The file's hold h1 is gone: its process is, and holds now live
		// in memory, so the restart released it.
		wantAccount(t, s, "alice", c("700"), 0)
		lots, err := s.Lots(ctx, "alice")
		want := []ledger.Lot{{ID: ledger.MigratedLot, Kind: ledger.KindAdjust, Amount: c("700"), Remaining: c("700"), Priority: ledger.DefaultPriority, Reference: "migration", CreatedAt: migratedAt}}
		if err != nil || !reflect.DeepEqual(lots, want) {
			t.Fatalf("open %d: lots of alice = %+v, %v\nwant %+v", open, lots, err, want)
		}
		if a := wantDebt(t, s, "bob", c("-50"), c("50")); a.Reserved != 0 {
			t.Fatalf("open %d: bob = %+v", open, a)
		}
		if a := mustAccount(t, s, "carol"); !a.Suspended || a.Balance != 0 {
			t.Fatalf("open %d: carol = %+v; want suspended with nothing", open, a)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
	}

	s, err := ledger.OpenBolt(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The old hold is unknown; a new one settles from the migrated lot;
	// a new credit repays bob's debt; carol gets her first lot.
	_, err = s.Settle(ctx, "alice", "h1", c("4"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldNotFound)
	mustReserve(t, s, "alice", "h2", c("5"), time.Minute)
	if en := mustSettle(t, s, "alice", "h2", c("4")); en.ID != "3" || en.BalanceAfter != c("696") {
		t.Fatalf("settle from the migrated lot = %+v", en)
	}
	wantLots(t, s, "alice", "0:696")
	mustCredit(t, s, "bob", c("60"))
	wantLots(t, s, "bob", "2:10")
	mustCredit(t, s, "carol", money.Credit)
	wantLots(t, s, "carol", "1:1")
	for _, c := range []string{"alice", "bob", "carol"} {
		checkInvariants(t, s, c)
	}
}

// TestRedisMigratesPreLotsAccount writes accounts as tollgate kept them in
// Redis before lots and checks that the first script to load each one
// turns its balance into lot 0 or debt, once, whichever script it is.
func TestRedisMigratesPreLotsAccount(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	clock := newFakeClock()
	s := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), ledger.Options{Now: clock.Now})
	t.Cleanup(func() { s.Close() })
	prefix := "mig" + randomHex(4)
	at := clock.Now().Format(time.RFC3339Nano)
	old := func(name string, balance int64, entries ...string) string {
		t.Helper()
		id := prefix + "-" + name
		keys := ledger.CustomerKeys(id)
		t.Cleanup(func() { rdb.Del(context.Background(), keys...) })
		expiry := clock.Now().Add(time.Hour).UnixMilli()
		pipe := rdb.TxPipeline()
		pipe.HSet(ctx, keys[0], "balance", balance, "reserved", 5_000_000, "seq", len(entries), "expire_at", expiry)
		pipe.HSet(ctx, keys[1], "h1", "5000000 attempt")
		pipe.ZAdd(ctx, keys[2], redis.Z{Score: float64(expiry), Member: "h1"})
		for i, e := range entries {
			pipe.HSet(ctx, keys[4], strconv.Itoa(i+1), e)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		return id
	}
	entries := []string{
		`1000000000 1000000000 {"kind":"topup","reference":"cs_1","at":"` + at + `"}`,
		`-300000000 700000000 {"kind":"charge","reference":"r1","at":"` + at + `"}`,
	}
	// Each first call is a different script; each migrates.
	first := map[string]func(t *testing.T, cust string){
		"account": func(t *testing.T, cust string) { wantAccount(t, s, cust, c("700"), c("5")) },
		"lots":    func(t *testing.T, cust string) { wantLots(t, s, cust, "0:700") },
		"settle": func(t *testing.T, cust string) {
			if en := mustSettle(t, s, cust, "h1", c("4")); en.BalanceAfter != c("696") {
				t.Fatalf("settle = %+v", en)
			}
		},
		"credit": func(t *testing.T, cust string) {
			if r := mustCredit(t, s, cust, c("1")); r.Entry.BalanceAfter != c("701") {
				t.Fatalf("credit = %+v", r)
			}
		},
		"reserve": func(t *testing.T, cust string) { mustReserve(t, s, cust, "h2", c("695"), ttl) },
	}
	for name, fn := range first {
		t.Run(name, func(t *testing.T) {
			cust := old(name, 700_000_000, entries...)
			migratedAt := clock.Now()
			fn(t, cust)
			clock.Advance(time.Millisecond)
			for range 2 {
				lots, err := s.Lots(ctx, cust)
				if err != nil || len(lots) == 0 || lots[0].ID != ledger.MigratedLot || !lots[0].CreatedAt.Equal(migratedAt) ||
					lots[0].Amount != c("700") || lots[0].Kind != ledger.KindAdjust || lots[0].Reference != "migration" {
					t.Fatalf("lots after %s = %+v, %v; want lot 0 of 700 first", name, lots, err)
				}
			}
			checkInvariants(t, s, cust)
		})
	}
	bob := old("bob", -50_000_000, `-50000000 -50000000 {"kind":"adjust","at":"`+at+`"}`)
	wantDebt(t, s, bob, c("-50"), c("50"))
	mustCredit(t, s, bob, c("60"))
	wantLots(t, s, bob, "2:10")
	checkInvariants(t, s, bob)
}

// TestRedisAdoptsWhatOlderReplicasDid: during a rolling upgrade, replicas
// of the version before lots share the Redis and change balances with
// scripts that know nothing of lots. The next script of this version takes
// a drop from the lots in burn order and turns a rise into a lot (after
// repaying debt), so that the lots again hold the balance.
func TestRedisAdoptsWhatOlderReplicasDid(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	clock := newFakeClock()
	s := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), ledger.Options{Now: clock.Now})
	t.Cleanup(func() { s.Close() })
	cust := "adopt-" + randomHex(4)
	keys := ledger.CustomerKeys(cust)
	t.Cleanup(func() { rdb.Del(context.Background(), keys...) })
	ten := 10
	mustApply(t, s, ledger.Credit{Customer: cust, Amount: c("10"), Kind: ledger.KindGrant, Key: "promo", Priority: &ten, ExpiresAt: clock.Now().Add(time.Hour)})
	mustApply(t, s, ledger.Credit{Customer: cust, Amount: c("20"), Kind: ledger.KindTopup, Key: "pack"})
	// older changes the balance as the scripts before lots did: balance
	// and seq in the account, one entry, nothing else.
	older := func(kind string, amount money.Micros) {
		t.Helper()
		v, err := rdb.HMGet(ctx, keys[0], "balance", "seq").Result()
		if err != nil {
			t.Fatal(err)
		}
		balance, _ := strconv.ParseInt(v[0].(string), 10, 64)
		seq, _ := strconv.ParseInt(v[1].(string), 10, 64)
		balance, seq = balance+int64(amount), seq+1
		body := `{"kind":"` + kind + `","reference":"older","at":"` + clock.Now().Format(time.RFC3339Nano) + `"}`
		pipe := rdb.TxPipeline()
		pipe.HSet(ctx, keys[0], "balance", balance, "seq", seq)
		pipe.HSet(ctx, keys[4], strconv.FormatInt(seq, 10), strconv.FormatInt(int64(amount), 10)+" "+strconv.FormatInt(balance, 10)+" "+body)
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	older("charge", c("-4"))
	wantLots(t, s, cust, "1:6", "2:20") // the promotion is spent first
	older("grant", c("5"))
	wantLots(t, s, cust, "1:6", "2:20", "4:5")
	older("charge", c("-2"))
	older("adjust", c("-38")) // two changes before this version looks: 40 in all
	wantLots(t, s, cust)
	wantDebt(t, s, cust, c("-9"), c("9"))
	older("grant", c("3"))
	wantDebt(t, s, cust, c("-6"), c("6"))
	older("grant", c("7"))
	wantLots(t, s, cust, "8:1")
	checkInvariants(t, s, cust)
	// This version carries on from there.
	mustCredit(t, s, cust, c("1"))
	wantLots(t, s, cust, "8:1", "9:1")
	checkInvariants(t, s, cust)
}
